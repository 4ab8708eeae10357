"""The ``edgepos`` command line: one command, a subcommand per job.

Exit codes are :class:`ExitCode` (listed in ``edgepos run --help`` and docs/operations.md);
``edgepos host ...`` exits with the host's codes (:class:`host.admin.ExitCode`), numbered so
that no number means two things.
"""

from __future__ import annotations

import argparse
import logging
import sys
from enum import IntEnum
from pathlib import Path

from authz.errors import AuthzError


class ExitCode(IntEnum):
    """What ``edgepos`` (``run``, ``simulate``, ``evaluate-day``) exits with. 3, 4 and 6 are
    the host's (``edgepos host``); a number never means two things."""

    OK = 0  #: done; the daemon stopped cleanly (SIGTERM, Ctrl-C)
    FAILED = 1  #: the daemon stopped after a failure at run time (the journal), or could not open its journal
    USAGE = 2  #: bad command line
    KEY_FILE = 5  #: a key, password or CA file named in the configuration is missing or unreadable
    CONFIG = 7  #: the configuration is invalid or unreadable
    PORT_IN_USE = 8  #: the local API's address (api.host, api.port) is taken
    ALREADY_RUNNING = 9  #: another daemon runs on this journal (site.data_dir)
    NO_REPLICA = 10  #: no stored replica, no broker to be provisioned from, no --simulated-replica
    INTERRUPTED = 130  #: Ctrl-C before the daemon was up


#: One line per exit code, for ``--help`` and the docs.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done; the daemon stopped cleanly (SIGTERM, Ctrl-C)",
    ExitCode.FAILED: "the daemon stopped after a failure at run time (the journal could not be written), "
                     "or its journal could not be opened",
    ExitCode.USAGE: "bad command line",
    ExitCode.KEY_FILE: "a file named by keys.*_file, broker.password_file or broker.tls_ca_file is missing "
                       "or unreadable",
    ExitCode.CONFIG: "the configuration (--config) is invalid or unreadable",
    ExitCode.PORT_IN_USE: "api.host:api.port is in use by another program",
    ExitCode.ALREADY_RUNNING: "another daemon runs on this journal (site.data_dir); the message names its pid",
    ExitCode.NO_REPLICA: "nothing to decide on: no replica stored in site.data_dir and no broker.url to be "
                         "provisioned from (a simulation runs with --simulated-replica)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C) while starting",
}


def exit_codes_epilog() -> str:
    """The exit-code table of ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {int(c):>3}  {EXIT_MEANINGS[c]}" for c in ExitCode) + \
        "\n  edgepos host ...: the host's codes (3, 4 and 6 are its own), see 'edgepos host --help'"


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``edgepos`` and its subcommands."""
    ap = argparse.ArgumentParser(
        prog="edgepos", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Edge transaction processor for fuel-station pumps and retail checkout tills.",
        epilog="Run 'edgepos COMMAND --help' for a command's options.\n\n" + exit_codes_epilog())
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    site = sub.add_parser(
        "simulate", help="run a simulated site: the daemon, simulated devices and people",
        description="Run the edge daemon of the embedded site (a filling station and a store) "
                    "with simulated devices (barcode scanners on ptys; virtual fuel cards through "
                    "pcscd and simulated dispensers when the site has pumps) and a traffic "
                    "generator of shoppers and drivers talking to its local API, for a set "
                    "simulated time. The network is created at an embedded host (mosquitto, a "
                    "SQLite ledger, a host worker); the site starts with no replica and is "
                    "provisioned from the host's snapshots; during the run the host blocks cards, "
                    "lowers a limit, tops up a contract, changes a price, issues a card and replaces "
                    "a club card, and drivers and shoppers use each changed card. Progress goes to "
                    "stderr; the summary (each change with the first decision under it, the journal "
                    "and the host ledger reconciled) to stdout.")
    site.add_argument("--minutes", type=_positive, default=120, metavar="N",
                      help="simulated minutes to run (default 120)")
    site.add_argument("--speed", type=_positive, default=240, metavar="X",
                      help="simulated seconds per real second (default 240: 2 hours in 30 s)")
    site.add_argument("--config", metavar="FILE", help="site configuration (default: the embedded one)")
    site.add_argument("--fuel-cards", type=_positive, default=2_000, metavar="N",
                      help="fuel cards created at the host and provisioned to the site (default 2000, "
                           "provisioned in about a second; a bigger network takes longer to provision)")
    site.add_argument("--club-accounts", type=_positive, default=2_000, metavar="N",
                      help="club accounts created at the host (default 2000)")
    site.add_argument("--seed", type=int, default=1, help="random seed of the replica and the traffic")
    site.add_argument("--cabinet-port", type=int, default=0, metavar="PORT",
                      help="port of the web cabinets on 127.0.0.1 (default: any free port; the address is printed)")
    site.add_argument("--keep-serving", action="store_true",
                      help="after the simulated day keep the host and the cabinets running (Ctrl-C stops)")

    hostp = sub.add_parser(
        "host", help="the central host's admin commands (cards, limits, blocks, reports...)",
        description="The central host's admin command line; 'edgepos host --help' lists its commands "
                    "(the same as python -m host.admin). The host's workers run as python -m host.worker.",
        add_help=False)
    hostp.add_argument("host_args", nargs=argparse.REMAINDER)

    sim = sub.add_parser(
        "evaluate-day", help="run a generated day of a fuel network and a store chain through the evaluator",
        description="Generate a fuel network (cards, contracts, limits, tariffs) and a club-card "
                    "chain (accounts, point lots), run a day of pump requests and till sales "
                    "through the evaluator, and print decisions by reason, litres, rubles and "
                    "points. Progress goes to stderr, the summary to stdout.")
    sim.add_argument("--fuel-cards", type=_positive, default=20_000, metavar="N", help="fuel cards (default 20000)")
    sim.add_argument("--fuel-requests", type=_positive, default=50_000, metavar="N",
                     help="pump requests in the day (default 50000)")
    sim.add_argument("--club-accounts", type=_positive, default=10_000, metavar="N",
                     help="club accounts (default 10000)")
    sim.add_argument("--club-sales", type=_positive, default=30_000, metavar="N",
                     help="till sales in the day (default 30000)")
    sim.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same day")
    sim.add_argument("--evaluator", choices=("native", "reference"), default=None,
                     help="evaluator implementation (default native; reference is the slow spec)")
    run = sub.add_parser(
        "run", help="run the edge daemon of a site", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the edge daemon: claim the journal (one daemon per journal: a second one "
                    "exits, naming the first), check the key files and the API port, open the "
                    "journal, load the host's replica stored beside it (a new site is first "
                    "provisioned from the host's snapshots through broker.url, and serves only once "
                    "it holds every table it needs), re-apply the journal's spend, recover every "
                    "lane's open transaction, sync with the broker when broker.url is set (no broker "
                    "is started: the simulation starts its own), then serve the local API until "
                    "SIGTERM or Ctrl-C. Without --config, the embedded simulated site's configuration.",
        epilog="A start-up error is one line naming the setting to fix.\n\n" + exit_codes_epilog())
    run.add_argument("--config", metavar="FILE", help="the site's TOML configuration")
    run.add_argument("--simulated-replica", action="store_true",
                     help="decide on a generated replica (simulations and benchmarks only; never a real "
                          "site): the host's tables are not used; --fuel-cards, --club-accounts, "
                          "--stop-list and --seed shape it")
    run.add_argument("--fuel-cards", type=_positive, default=10_000, metavar="N",
                     help="cards in the generated replica (with --simulated-replica; default 10000)")
    run.add_argument("--club-accounts", type=_positive, default=5_000, metavar="N",
                     help="club accounts in the generated replica (default 5000)")
    run.add_argument("--stop-list", type=int, default=0, metavar="N",
                     help="pad the generated stop list to N entries (cards of other issuers)")
    run.add_argument("--seed", type=int, default=1, help="seed of the generated replica")
    run.add_argument("--evaluator", choices=("native", "reference"), default=None,
                     help="evaluator implementation (default native)")
    return ap


def _run_daemon(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from .config import load_config
    from .daemon import Daemon
    from .replica import Replica

    config = load_config(args.config)
    replica = None
    if args.simulated_replica:
        replica = Replica.simulated(config, fuel_cards=args.fuel_cards, club_accounts=args.club_accounts,
                                    stop_list=args.stop_list, seed=args.seed, impl=args.evaluator)
    source = str(Path(args.config).resolve()) if args.config else "the embedded configuration"

    async def serve() -> int:
        daemon = Daemon(config, replica, config_source=source, impl=args.evaluator)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        starting = asyncio.create_task(daemon.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # SIGTERM while a new site waits for the host's snapshots
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await daemon.stop()
            return ExitCode.OK
        stopping.cancel()
        starting.result()  # a start-up error: raised here, with its exit code
        print(f"edgepos: site {config.site_id} listening on http://{config.api.host}:{daemon.port}",
              file=sys.stderr, flush=True)
        waiter = asyncio.create_task(daemon.stopped.wait())
        await asyncio.wait([asyncio.create_task(stop.wait()), waiter], return_when=asyncio.FIRST_COMPLETED)
        await daemon.stop()
        if daemon.failure is not None:
            print(f"edgepos: stopped after a failure: {daemon.failure}", file=sys.stderr)
            return ExitCode.FAILED
        return ExitCode.OK

    return asyncio.run(serve())


def _exit_code_of(exc: BaseException) -> ExitCode | None:
    """The exit code of a start-up error (its message names the setting), None for others."""
    from .config import ConfigError
    from .daemon import (
        AlreadyRunning,
        JournalUnusable,
        KeyFileError,
        NoReplica,
        PortInUse,
        ReplicaUnusable,
        StartError,
    )
    for kind, code in ((AlreadyRunning, ExitCode.ALREADY_RUNNING), (PortInUse, ExitCode.PORT_IN_USE),
                       (NoReplica, ExitCode.NO_REPLICA), (ReplicaUnusable, ExitCode.FAILED),
                       (KeyFileError, ExitCode.KEY_FILE), (JournalUnusable, ExitCode.FAILED),
                       (StartError, ExitCode.CONFIG), (ConfigError, ExitCode.CONFIG),
                       (AuthzError, ExitCode.FAILED)):
        if isinstance(exc, kind):
            return code
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgepos`` console command."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["host"]:  # the host's own command line takes everything after "host"
        from host.admin import main as host_main

        from .issuing import VirtualCardWriter  # host and hw meet here, not in host
        return host_main(raw[1:], prog="edgepos host", card_writer=VirtualCardWriter())
    ap = build_parser()
    args = ap.parse_args(raw)
    # the simulation's progress lines say what happens; the daemon's log is for -v there
    quiet = args.command == "simulate" and not args.verbose
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        ap.print_help()
        return ExitCode.USAGE
    try:
        if args.command == "run":
            return _run_daemon(args)
        if args.command == "simulate":
            import asyncio

            from .config import load_config
            from .simsite import run_site
            from .simsite import stderr_progress as site_progress
            from host.web.demo import DemoCabinets  # the host's cabinets beside the simulation
            asyncio.run(run_site(config=load_config(args.config) if args.config else None,
                                 sim_seconds=args.minutes * 60, speed=args.speed, seed=args.seed,
                                 fuel_cards=args.fuel_cards, club_accounts=args.club_accounts,
                                 progress=site_progress,
                                 cabinets=DemoCabinets(port=args.cabinet_port, keep_serving=args.keep_serving)))
            return ExitCode.OK
        if args.command == "evaluate-day":
            from .dayrun import run_day, stderr_progress
            summary = run_day(fuel_cards=args.fuel_cards, fuel_requests=args.fuel_requests,
                              club_accounts=args.club_accounts, club_sales=args.club_sales,
                              seed=args.seed, impl=args.evaluator, progress=stderr_progress)
            print(summary.render())
            return ExitCode.OK
    except KeyboardInterrupt:
        print("edgepos: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:
        code = _exit_code_of(exc)
        if code is None:
            raise  # a bug: the traceback is what to report
        print(f"edgepos: {exc}", file=sys.stderr)
        return code
    ap.error(f"unknown command {args.command!r}")
    return ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
