"""The scanner driver: the sans-IO Framer and RepeatFilter, then the Scanner on real ptys
(raw pty pairs and the ScannerSim), reconnects through a udev-like symlink, and the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hw.barcode import is_valid_ean13
from hw.errors import ScannerError
from hw.scanner import (
    TERMINATORS,
    Framer,
    RepeatFilter,
    Scan,
    ScanEvent,
    Scanner,
    ScannerConfig,
    ScanKind,
    ScanNoise,
)
from hw.sim.scanner import ScannerSim
from tests.hw.conftest import PtyPair

REPO = Path(__file__).resolve().parents[2]
STEP_S = 5.0  # bound on any single wait: a bug fails the test instead of hanging it
CARD = "4006381333931"
BAD_CARD = "4006381333932"
T = TypeVar("T")


def framer(**kwargs: object) -> Framer:
    """A Framer with a fixed clock, so events compare equal across runs and chunkings."""
    return Framer(clock=lambda: 0.0, **kwargs)  # type: ignore[arg-type]


def scan(code: str, symbology: str | None = None, kind: ScanKind = ScanKind.OTHER) -> Scan:
    """The Scan a fixed-clock framer emits."""
    return Scan(code, symbology, 0.0, kind)


def run(main: Callable[[], Awaitable[T]], timeout_s: float = 15.0) -> T:
    """Run an async test body with an overall bound as well as the per-step ones."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout_s)

    return asyncio.run(bounded())


async def next_event(scanner: Scanner) -> ScanEvent:
    """The scanner's next event, or a TimeoutError failing the test."""
    return await asyncio.wait_for(anext(scanner), STEP_S)


async def events(scanner: Scanner, n: int) -> list[ScanEvent]:
    """The scanner's next ``n`` events."""
    return [await next_event(scanner) for _ in range(n)]


def strip_at(events_: list[ScanEvent]) -> list[object]:
    """Events without their timestamps, for comparing driver output."""
    return [(e.code, e.symbology, e.kind) if isinstance(e, Scan) else e for e in events_]


# --- Framer: framing -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", list(TERMINATORS))
def test_frames_on_each_suffix(suffix: str) -> None:
    term = TERMINATORS[suffix]
    f = framer(suffix=suffix)
    assert f.feed(b"ABC-123" + term + CARD.encode() + term) == [
        scan("ABC-123"),
        scan(CARD, kind=ScanKind.CLUB_CARD),
    ]
    assert f.buffered == 0


def test_partial_reads_and_crlf_split_across_reads() -> None:
    f = framer(suffix="CRLF")
    assert f.feed(b"AB") == []
    assert f.feed(b"C\r") == []
    assert f.feed(b"\nDE") == [scan("ABC")]
    assert f.feed(b"F\r\n") == [scan("DEF")]


def test_byte_by_byte() -> None:
    f = framer(suffix="LF", prefix=b"\x02", aim=True)
    out: list[ScanEvent] = []
    for byte in b"\x02]E0" + CARD.encode() + b"\n":
        out += f.feed(bytes([byte]))
    assert out == [scan(CARD, "]E0", ScanKind.CLUB_CARD)]


def test_several_frames_in_one_read() -> None:
    f = framer(suffix="CR")
    assert f.feed(b"A1\rB2\rC3\rD") == [scan("A1"), scan("B2"), scan("C3")]
    assert f.feed(b"4\r") == [scan("D4")]


def test_prefix_is_stripped_and_required() -> None:
    f = framer(suffix="CR", prefix="#")
    assert f.feed(b"#XYZ\r") == [scan("XYZ")]
    (noise,) = f.feed(b"XYZ\r")
    assert isinstance(noise, ScanNoise) and "prefix" in noise.reason and noise.raw_len == 3
    assert f.feed(b"#\r") == [ScanNoise("frame has no code after its prefix/AIM identifier", 1)]


def test_binary_prefix_like_stx() -> None:
    f = framer(suffix="CRLF", prefix=b"\x02")
    assert f.feed(b"\x02HELLO\r\n") == [scan("HELLO")]


def test_aim_identifier_is_parsed_and_required() -> None:
    f = framer(suffix="CR", aim=True)
    assert f.feed(b"]E0" + CARD.encode() + b"\r]C1ABC\r]d2XY\r") == [
        scan(CARD, "]E0", ScanKind.CLUB_CARD),
        scan("ABC", "]C1"),
        scan("XY", "]d2"),
    ]
    (noise,) = f.feed(CARD.encode() + b"\r")
    assert isinstance(noise, ScanNoise) and "AIM" in noise.reason


# --- Framer: noise ---------------------------------------------------------------------


def test_binary_garbage_is_noise_then_scans_work() -> None:
    f = framer(suffix="CR")
    out = f.feed(b"\x00\xff\x13junk\rAB\x07C\rOK\r")
    assert out == [
        ScanNoise("control byte 0x00 at offset 0", 7),
        ScanNoise("control byte 0x07 at offset 2", 4),
        scan("OK"),
    ]
    (non_ascii,) = f.feed("Ж1\r".encode())
    assert isinstance(non_ascii, ScanNoise) and non_ascii.reason.startswith("non-ASCII byte 0xD0")


def test_overlong_frame_is_noise_and_framing_resyncs() -> None:
    f = framer(suffix="CR", max_frame_len=16)
    out = f.feed(b"A" * 40 + b"\rOK\r")
    assert out == [
        ScanNoise("no terminator within 16 bytes; skipping to the next CR", 17),
        scan("OK"),
    ]


def test_overlong_without_terminator_keeps_the_buffer_bounded() -> None:
    f = framer(suffix="CRLF", max_frame_len=16)
    out: list[ScanEvent] = []
    for _ in range(1000):
        out += f.feed(b"\x01" * 100)
        assert f.buffered <= 17
    assert len(out) == 1 and isinstance(out[0], ScanNoise)
    assert f.feed(b"tail\r\nOK\r\n") == [scan("OK")]


def test_frame_of_exactly_max_len_passes_even_with_crlf_split() -> None:
    f = framer(suffix="CRLF", max_frame_len=8)
    assert f.feed(b"12345678\r") == []
    assert f.feed(b"\n") == [scan("12345678")]


def test_bad_check_digit_is_noise_then_valid_card_scans() -> None:
    f = framer(suffix="CR")
    assert f.feed(BAD_CARD.encode() + b"\r" + CARD.encode() + b"\r") == [
        ScanNoise("bad EAN-13 check digit", 13),
        scan(CARD, kind=ScanKind.CLUB_CARD),
    ]


def test_wrong_suffix_gives_a_hint() -> None:
    f = framer(suffix="LF")
    (noise,) = f.feed(b"ABC\r\n")
    assert isinstance(noise, ScanNoise)
    assert "stray CR" in noise.reason and "LF" in noise.reason


def test_empty_frame_is_noise() -> None:
    assert framer(suffix="CR").feed(b"\r") == [ScanNoise("empty frame", 0)]


def test_club_card_prefixes_decide_the_kind() -> None:
    f = framer(club_card_prefixes=("400",))
    assert f.feed(CARD.encode() + b"\r5901234123457\r1234\r") == [
        scan(CARD, kind=ScanKind.CLUB_CARD),
        scan("5901234123457", kind=ScanKind.OTHER),
        scan("1234", kind=ScanKind.OTHER),
    ]


def test_scan_repr_masks_the_code() -> None:
    assert CARD not in repr(Scan(CARD, None, 1.0, ScanKind.CLUB_CARD))
    assert "40*******3931" in repr(Scan(CARD, None, 1.0, ScanKind.CLUB_CARD))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suffix": "CRCR"}, "suffix must be one of CR, LF, CRLF"),
        ({"prefix": b"\r"}, "must not contain CR or LF"),
        ({"prefix": "Ж"}, "prefix must be ASCII"),
        ({"max_frame_len": 3, "aim": True}, "max_frame_len"),
        ({"repeat_window_s": -1}, "repeat_window_s"),
        ({"reconnect_interval_s": 0}, "reconnect_interval_s"),
        ({"baudrate": 0}, "baudrate"),
        ({"club_card_prefixes": "400"}, "not one string"),
        ({"club_card_prefixes": ("40a",)}, "ASCII digits"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScannerError, match=message):
        ScannerConfig(port="/dev/ttyUSB0", **kwargs)  # type: ignore[arg-type]


def test_config_normalizes_prefix() -> None:
    assert ScannerConfig(port="/dev/ttyUSB0", prefix="#").prefix == b"#"
    assert ScannerConfig(port="/dev/ttyUSB0", prefix="").prefix is None


# --- RepeatFilter ------------------------------------------------------------------------


def test_repeat_filter_sliding_window() -> None:
    r = RepeatFilter(1.0)
    at = [0.0, 0.5, 1.2, 2.5, 2.6, 2.7]
    codes = ["A", "A", "A", "A", "B", "A"]
    # 0.5: repeat; 1.2: 0.7 s after the last read of A, still a repeat (held card);
    # 2.5: 1.3 s of quiet, passes; B passes; A after B passes.
    assert [r.admit(Scan(c, None, t)) for c, t in zip(codes, at)] == [
        True, False, False, True, True, True,
    ]


def test_repeat_filter_disabled() -> None:
    r = RepeatFilter(0)
    assert all(r.admit(Scan("A", None, 0.0)) for _ in range(3))


# --- Framer: property tests --------------------------------------------------------------

configs = st.fixed_dictionaries(
    {
        "suffix": st.sampled_from(list(TERMINATORS)),
        "prefix": st.sampled_from([None, b"\x02", b"#"]),
        "aim": st.booleans(),
        "max_frame_len": st.sampled_from([8, 16, 64]),
        "club_card_prefixes": st.sampled_from([(), ("400",)]),
    }
)
codes = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.text(alphabet="0123456789", min_size=13, max_size=13),
    st.sampled_from([CARD, BAD_CARD]),
)


@st.composite
def streams(draw: st.DrawFn, config: dict[str, object]) -> bytes:
    """A byte stream mixing well-framed scans, terminators and arbitrary garbage."""
    term = TERMINATORS[config["suffix"]]  # type: ignore[index]
    prefix = config["prefix"] or b""
    aim = b"]E0" if config["aim"] else b""
    pieces = draw(
        st.lists(
            st.one_of(
                codes.map(lambda c: prefix + aim + c.encode() + term),
                st.binary(max_size=80),
                st.sampled_from([b"\r", b"\n", b"\r\n", prefix]),
            ),
            max_size=12,
        )
    )
    return b"".join(pieces)  # type: ignore[arg-type]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (taken modulo its length, deduplicated)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), config=configs)
def test_fuzz_framer_chunking_does_not_matter(
    data: st.DataObject, config: dict[str, object]
) -> None:
    stream = data.draw(streams(config))
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=20))
    whole = framer(**config).feed(stream)
    f = framer(**config)
    chunked: list[ScanEvent] = []
    for chunk in split(stream, cuts):
        chunked += f.feed(chunk)
        assert f.buffered <= config["max_frame_len"] + 1  # type: ignore[operator]
    assert chunked == whole


@settings(max_examples=300, deadline=None)
@given(config=configs, chunks=st.lists(st.binary(max_size=100), max_size=20))
def test_fuzz_framer_arbitrary_bytes(config: dict[str, object], chunks: list[bytes]) -> None:
    f = framer(**config)
    for chunk in chunks:
        for event in f.feed(chunk):
            if isinstance(event, ScanNoise):
                assert event.reason and event.raw_len >= 0
                continue
            assert event.code and event.code.isascii() and event.code.isprintable()
            assert len(event.code) <= config["max_frame_len"]  # type: ignore[operator]
            if len(event.code) == 13 and event.code.isdigit():
                assert is_valid_ean13(event.code)
            if event.kind is ScanKind.CLUB_CARD:
                assert is_valid_ean13(event.code)
            assert (event.symbology is not None) == config["aim"]


# --- Scanner on a raw pty pair -------------------------------------------------------------


def test_reads_the_pty_path_like_a_serial_device(pty_pair: PtyPair) -> None:
    async def main() -> list[ScanEvent]:
        async with Scanner(ScannerConfig(port=pty_pair.path, suffix="CR")) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            pty_pair.write(b"ONE\rTWO\rTH")  # several frames and a partial one
            await asyncio.sleep(0.05)
            pty_pair.write(b"REE\r")
            return await events(s, 3)

    assert strip_at(run(main)) == [
        ("ONE", None, ScanKind.OTHER),
        ("TWO", None, ScanKind.OTHER),
        ("THREE", None, ScanKind.OTHER),
    ]


def test_crlf_split_across_writes(pty_pair: PtyPair) -> None:
    async def main() -> list[ScanEvent]:
        async with Scanner(ScannerConfig(port=pty_pair.path, suffix="CRLF")) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            pty_pair.write(CARD.encode() + b"\r")
            await asyncio.sleep(0.05)
            pty_pair.write(b"\n")
            return await events(s, 1)

    (event,) = run(main)
    assert isinstance(event, Scan) and event.code == CARD and event.kind is ScanKind.CLUB_CARD


def test_master_hang_up_is_noticed(pty_pair: PtyPair) -> None:
    async def main() -> None:
        cfg = ScannerConfig(port=pty_pair.path, reconnect_interval_s=0.05)
        async with Scanner(cfg) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            pty_pair.hang_up()
            await asyncio.wait_for(s.wait_disconnected(), STEP_S)
            assert not s.connected

    run(main)


# --- Scanner on the simulator ------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "prefix", "aim"),
    [("CR", None, False), ("LF", b"\x02", False), ("CRLF", "#", True), ("CR", None, True)],
)
def test_sim_framings_end_to_end(suffix: str, prefix: bytes | str | None, aim: bool) -> None:
    async def main(sim: ScannerSim) -> list[ScanEvent]:
        cfg = ScannerConfig(port=sim.port, suffix=suffix, prefix=prefix, aim=aim)
        async with Scanner(cfg) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.scan(CARD)
            sim.scan("SKU-42")
            return await events(s, 2)

    with ScannerSim(suffix=suffix, prefix=prefix, aim=aim) as sim:
        got = run(lambda: main(sim))
    assert strip_at(got) == [
        (CARD, "]E0" if aim else None, ScanKind.CLUB_CARD),
        ("SKU-42", "]C0" if aim else None, ScanKind.OTHER),
    ]


def test_noise_is_reported_and_scans_still_work() -> None:
    async def main(sim: ScannerSim) -> list[ScanEvent]:
        cfg = ScannerConfig(port=sim.port, max_frame_len=32)
        async with Scanner(cfg) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.noise(10)  # random non-ASCII bytes, then CR
            sim.scan("AFTER-GARBAGE")
            sim.write(b"X" * 100 + b"\r")  # overlong
            sim.scan("AFTER-OVERLONG")
            sim.scan(BAD_CARD)
            sim.scan(CARD)
            return await events(s, 6)

    with ScannerSim() as sim:
        got = run(lambda: main(sim))
    garbage, after_garbage, overlong, after_overlong, bad, card = got
    assert isinstance(garbage, ScanNoise) and garbage.reason.startswith("non-ASCII byte")
    assert garbage.raw_len == 10
    assert isinstance(overlong, ScanNoise) and "no terminator within 32 bytes" in overlong.reason
    assert bad == ScanNoise("bad EAN-13 check digit", 13)
    assert strip_at([after_garbage, after_overlong, card]) == [
        ("AFTER-GARBAGE", None, ScanKind.OTHER),
        ("AFTER-OVERLONG", None, ScanKind.OTHER),
        (CARD, None, ScanKind.CLUB_CARD),
    ]


def test_repeat_within_window_is_suppressed() -> None:
    async def main(sim: ScannerSim) -> list[ScanEvent]:
        async with Scanner(ScannerConfig(port=sim.port, repeat_window_s=0.5)) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            # One write: the repeat cannot be delayed past the window by a slow machine.
            sim.write(sim.frame(CARD) + sim.frame(CARD) + sim.frame("NEXT"))
            return await events(s, 2)

    with ScannerSim() as sim:
        got = run(lambda: main(sim))
    assert [e.code for e in got if isinstance(e, Scan)] == [CARD, "NEXT"]


def test_repeat_after_window_is_delivered() -> None:
    async def main(sim: ScannerSim) -> list[ScanEvent]:
        async with Scanner(ScannerConfig(port=sim.port, repeat_window_s=0.2)) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.scan(CARD)
            first = await next_event(s)
            await asyncio.sleep(0.4)
            sim.scan(CARD)
            return [first, await next_event(s)]

    with ScannerSim() as sim:
        first, second = run(lambda: main(sim))
    assert isinstance(first, Scan) and isinstance(second, Scan)
    assert first.code == second.code == CARD
    assert second.at - first.at >= 0.2


def test_unplug_and_replug_through_the_stable_link(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgepos.hw.scanner")

    async def main(sim: ScannerSim) -> list[ScanEvent]:
        cfg = ScannerConfig(port=sim.link, reconnect_interval_s=0.05)
        async with Scanner(cfg) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.scan("BEFORE")
            got = [await next_event(s)]
            for n in range(2):
                sim.write(b"PARTIAL")  # a frame cut off by the unplug must not leak through
                sim.unplug()
                await asyncio.wait_for(s.wait_disconnected(), STEP_S)
                await asyncio.sleep(0.15)  # a few failed reopen attempts
                sim.replug()
                await asyncio.wait_for(s.wait_connected(), STEP_S)
                sim.scan(f"AFTER-{n}")
                got.append(await next_event(s))
            assert os.path.realpath(sim.link) == sim.port  # (the pts number may be reused)
            return got

    with ScannerSim() as sim:
        got = run(lambda: main(sim))
    assert [e.code for e in got if isinstance(e, Scan)] == ["BEFORE", "AFTER-0", "AFTER-1"]
    assert "lost" in caplog.text and "cannot open scanner port" in caplog.text


def test_port_missing_at_start_is_waited_for(tmp_path: Path) -> None:
    link = tmp_path / "scanner"

    async def main(sim: ScannerSim) -> ScanEvent:
        async with Scanner(ScannerConfig(port=str(link), reconnect_interval_s=0.05)) as s:
            await asyncio.sleep(0.15)
            assert not s.connected
            link.symlink_to(sim.port)
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.scan("LATE")
            return await next_event(s)

    with ScannerSim() as sim:
        event = run(lambda: main(sim))
    assert isinstance(event, Scan) and event.code == "LATE"


def test_closing_ends_iteration_cleanly() -> None:
    async def main(sim: ScannerSim) -> list[ScanEvent]:
        got: list[ScanEvent] = []
        scanner = Scanner(ScannerConfig(port=sim.port))

        async def consume() -> None:
            async for event in scanner:
                got.append(event)

        async with scanner:
            await asyncio.wait_for(scanner.wait_connected(), STEP_S)
            consumer = asyncio.create_task(consume())
            sim.scan("ONLY")
            while not got:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(consumer, STEP_S)  # ends without error once closed
        assert not scanner.connected
        with pytest.raises(StopAsyncIteration):
            await anext(scanner)
        return got

    with ScannerSim() as sim:
        assert [e.code for e in run(lambda: main(sim)) if isinstance(e, Scan)] == ["ONLY"]


def test_misuse_raises_scanner_error() -> None:
    async def main() -> None:
        scanner = Scanner(ScannerConfig(port="/nonexistent/ttyUSB9"))
        with pytest.raises(ScannerError, match="async with"):
            await anext(scanner)
        async with scanner:
            pass
        with pytest.raises(ScannerError, match="only once"):
            await scanner.__aenter__()

    run(main)


def test_logs_never_contain_a_full_card_number(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edgepos.hw.scanner")

    async def main(sim: ScannerSim) -> list[ScanEvent]:
        async with Scanner(ScannerConfig(port=sim.port, repeat_window_s=5)) as s:
            await asyncio.wait_for(s.wait_connected(), STEP_S)
            sim.write(sim.frame(CARD) * 2 + sim.frame(BAD_CARD) + sim.frame("END"))
            return await events(s, 3)

    with ScannerSim() as sim:
        got = run(lambda: main(sim))
    assert len(got) == 3
    assert "40*******3931" in caplog.text
    assert CARD not in caplog.text and BAD_CARD not in caplog.text


# --- simulator CLI ----------------------------------------------------------------------


def test_sim_cli_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hw.sim.scanner", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0 and "--suffix" in done.stdout


def test_sim_cli_scans_stdin_lines() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "hw.sim.scanner", "--suffix", "CRLF", "--aim"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        stdin = proc.stdin
        try:
            port = proc.stdout.readline().strip().removeprefix("port: ")
            assert port.startswith("/dev/"), port

            async def main() -> list[ScanEvent]:
                async with Scanner(ScannerConfig(port=port, suffix="CRLF", aim=True)) as s:
                    await asyncio.wait_for(s.wait_connected(), STEP_S)
                    stdin.write(f"{CARD}\n\nSKU-1\n")
                    stdin.close()
                    return await events(s, 2)

            assert strip_at(run(main)) == [
                (CARD, "]E0", ScanKind.CLUB_CARD),
                ("SKU-1", "]C0", ScanKind.OTHER),
            ]
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
