"""The edge daemon: configuration -> journal -> replica (from the replica store beside the
journal, a new site first provisioned from the host's snapshots; the journal's local spend
re-applied) -> lanes (each open transaction recovered) -> local API and device tasks.

Start order matters for "nothing lost, nothing counted twice": first the daemon claims the
journal (:class:`JournalLock`: one daemon per journal) and checks what an operator can get
wrong (key files, the API port), so a second instance or a bad setting stops before anything
is touched (a site with no way to get a replica stops here too: :class:`NoReplica`); then the
replica is built from the store and the journal before any lane takes a request, and every
lane finishes or voids what the last run left open before the API serves sales. A new site
listens early for ``/v1/health`` only, while it waits for the host (terminal/provision.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from authz.fuel_model import mask_card_no
from hw.card.keys import KeyStore, KeyStoreError, SoftwareKeyStore
from hw.dispensers.factory import DispenserLinks
from hw.pump import Pump
from hw.scanner import Scan, ScanKind, Scanner, ScannerConfig, ScanNoise
from wire import REPLICA_VERIFY_KEY_FILE

from . import fuel_api
from .api import LocalApi
from .config import SiteConfig
from .events import EventBus, stop_list_event
from .follower import FollowerUpdate, ReplicaUpdate, StagedSnapshot
from .fuel import (
    CARD_COMMITTED,
    PREAUTH,
    RESERVED,
    VOIDED,
    FuelLane,
    FuelTimeouts,
    RecordedSimPump,
    sim_key_store,
)
from .fuel import TERMINAL_KINDS as FUEL_TERMINAL_KINDS
from .journal import Journal, JournalClosedError, JournalError
from .provision import EagerColumns, ProvisionStatus, build_replica, tables_needed
from .own_spend import JournalSpend
from .replica import Replica, ReplicaUpdateError
from .replica_store import STORE_FILE, ReplicaStore, ReplicaStoreError, versions_text
from .club_swap import apply_club_snapshot
from .club_swap import can_swap as can_swap_club
from .snapshot_swap import apply_snapshot
from .stop_list_swap import apply_stop_list_snapshot
from .till import TERMINAL_KINDS as TILL_TERMINAL_KINDS
from .till import TillLane

if TYPE_CHECKING:
    from wire import Table

    from .sync import SyncClient

log = logging.getLogger("edgepos.daemon")

__all__ = ["AlreadyRunning", "Daemon", "JournalLock", "JournalUnusable", "KeyFileError", "NoReplica", "PortInUse",
           "ReplicaUnusable", "StartError"]


class StartError(Exception):
    """The daemon cannot start, and nothing was touched: the message (one line) names the
    setting to fix (``setting``) and what is wrong with it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class AlreadyRunning(StartError):
    """Another daemon holds this journal's lock; ``holder`` is what it wrote about itself
    (pid, site, when and with which configuration it started), empty if it is still starting."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__("site.data_dir", message)
        self.holder = holder


class NoReplica(StartError):
    """The site has nothing to decide on: no stored replica, no broker to be provisioned
    from, and no ``--simulated-replica``."""


class ReplicaUnusable(StartError):
    """The replica store beside the journal cannot be opened or read."""


class KeyFileError(StartError):
    """A key, password or CA file named in the configuration is missing or unreadable (the
    message names the file and the setting, never the content)."""


class PortInUse(StartError):
    """The local API's address is taken by another program."""


class JournalUnusable(StartError):
    """The journal in ``site.data_dir`` cannot be opened: another site's, a newer version's,
    not a journal, or not writable (the lock is released again)."""


class JournalLock:
    """One daemon per journal: an exclusive ``fcntl.flock`` on ``<journal>.lock``, held for
    the life of the process.

    The OS drops the lock when the holder's file is closed, so a crashed or SIGKILLed daemon
    leaves no stale lock: the next one starts. The file is never deleted (deleting a lock
    file lets two processes lock two different files); while locked it holds the holder's
    pid, site, start time and configuration as JSON, which :class:`AlreadyRunning` reports.
    The descriptor is not inherited by child processes (Python opens it close-on-exec), so a
    child cannot keep the lock alive after the daemon dies.
    """

    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path.with_name(journal_path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, owner: dict[str, Any]) -> None:
        """Take the lock and write ``owner`` into the file. Raises :class:`AlreadyRunning`
        (naming the holder) if another process (or another :class:`JournalLock`) holds it,
        :class:`StartError` if the file cannot be created."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartError("site.data_dir", f"cannot create the journal's lock file {self.path}: "
                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._read(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StartError("site.data_dir", f"cannot lock {self.path}: {exc.strerror or exc}") from None
            raise AlreadyRunning(self._describe(holder), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner, sort_keys=True) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _describe(self, holder: dict[str, Any]) -> str:
        journal = self.path.with_name(self.path.name.removesuffix(".lock"))
        if not holder.get("pid"):
            who = "another edgepos daemon (still starting: its pid is not written yet)"
        else:
            who = (f"edgepos daemon pid {holder['pid']} (site {holder.get('site_id', '?')}, started "
                   f"{holder.get('started_utc', '?')} with {holder.get('config', '?')})")
        return (f"{who} is running on the journal {journal}; stop it first, "
                "or give this daemon its own site.data_dir")


def _mask_body(value: Any) -> Any:
    """A journal body for operators: every ``card_no`` masked."""
    if isinstance(value, dict):
        return {k: (mask_card_no(v) if k == "card_no" and isinstance(v, str) else _mask_body(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_body(v) for v in value]
    return value


def _give_back_freed_memory() -> None:
    """Collect garbage, then return the C heap's free pages to the system (glibc's
    ``malloc_trim``; nothing elsewhere). Receiving a snapshot and building the evaluators
    allocate and free hundreds of MB, in several threads' malloc arenas, which glibc keeps
    for reuse: without this, a site provisioned from the host would serve with far more
    resident memory than the same site restarted from its store."""
    import gc

    from native.compact import release_free_memory

    gc.collect()
    release_free_memory()


def _map_large_blocks() -> None:
    """Have glibc give every block of 256 kB or more its own mapping, returned to the system
    when freed (``mallopt(M_MMAP_THRESHOLD)``; nothing elsewhere). A new site receives its
    snapshot as hundreds of frames of about 1 MB; by default glibc raises its mapping
    threshold after the first such free and carves the rest out of its heap, where the small
    blocks allocated between them keep pages resident after the frames are gone. A site
    restarted from its store builds its columns the same way: the arrays grown and dropped
    while loading would otherwise raise the threshold too, and the evaluators' big tables
    then come out of the heap (a zero-filled one written through instead of mapped on
    demand), about 7 MB more resident for 1 M cards."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD


def _age_text(seconds: int) -> str:
    """``3 h 12 min``, ``4 min``, ``20 s``."""
    if seconds >= 86_400:
        return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{max(seconds, 0)} s"


def _plain(value: Any) -> Any:
    """A status for JSON: enums by value, mappings with text keys."""
    if isinstance(value, dict):
        return {str(getattr(k, "value", k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


class Daemon:
    """One site's daemon. ``async with Daemon(...)`` starts it; leaving the block stops it.

    ``keys`` is the card issuer's key store (default: ``keys.issuer_key_file`` of the
    configuration, else the simulation's public test key). ``pumps`` gives dispenser objects
    by pump id (tests); a pump not given, with dispenser "sim", is a
    :class:`terminal.fuel.RecordedSimPump` keeping its memory in ``data_dir/pumps``.
    ``config_source`` says where the configuration came from (its file), for the message a
    second daemon on the same journal gets (:class:`AlreadyRunning`).
    """

    def __init__(self, config: SiteConfig, replica: Replica | None = None, *, journal_path: Path | None = None,
                 listen: bool = True, keys: KeyStore | None = None, pumps: dict[int, Pump] | None = None,
                 fuel_timeouts: FuelTimeouts | None = None, config_source: str | None = None,
                 impl: str | None = None, progress_interval_s: float = 5.0) -> None:
        self.config = config
        #: where the configuration came from (a file path), for the journal lock's holder line
        self.config_source = config_source or "a configuration given in code"
        #: the evaluators: given (a simulated replica), or built from the replica store once it
        #: holds every table the site needs (None until then)
        self._replica = replica
        #: the host's tables as this site holds them (None when a replica was given)
        self.store: ReplicaStore | None = None
        self.store_path = (journal_path.parent if journal_path else config.data_dir) / STORE_FILE
        #: the sale routes and lanes are open (False while a new site waits for its snapshots)
        self.serving = False
        self.impl = impl
        self.progress_interval_s = progress_interval_s
        self._replica_lock = asyncio.Lock()
        self._provision_started: float | None = None
        self._eager: EagerColumns | None = None  # a new site's fuel columns, filled as its parts are staged
        self.provisioned_in_s: float | None = None
        #: seconds from the start of provisioning (a new site), and from the first snapshot part
        #: received, to the evaluators built
        self.provisioned_from_first_part_s: float | None = None
        self.journal_path = journal_path or config.data_dir / "journal.sqlite"
        self.listen = listen
        self.bus = EventBus()
        self.journal: Journal | None = None
        self.tills: dict[str, TillLane] = {}
        #: the fuel lanes by pump id (``daemon.pumps[1].pump`` is the dispenser)
        self.pumps: dict[int, FuelLane] = {}
        self.keys = keys
        self.fuel_timeouts = fuel_timeouts
        self._pump_devices = dict(pumps or {})
        self._dispenser_links = DispenserLinks()  # PTS-2 controllers and RS-485 lines, shared
        #: kopecks held per contract by open authorizations (shared by the pump lanes)
        self.fuel_holds: dict[int, int] = replica.fuel_holds if replica is not None else {}
        #: the highest transaction counter seen per fuel card (from the journal, then live)
        self.card_counters_seen: dict[str, int] = {}
        self.scanners: dict[str, Scanner] = {}
        self.sync: SyncClient | None = None  #: the sync client, when a broker is configured
        self._host_stop_list: set[str] = set()
        self.api: LocalApi | None = None
        self.port: int | None = None
        self.started_at = time.time()
        self.stopped = asyncio.Event()
        self.failure: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.lock = JournalLock(self.journal_path)
        self._sock: socket.socket | None = None
        self._issuer_keys: KeyStore | None = None
        self._site_keys: Any = None
        self._sync_settings: Any = None
        self._replayed = 0

    @property
    def replica(self) -> Replica:
        """The site's evaluators; :class:`RuntimeError` before a provisioning site has them."""
        if self._replica is None:
            raise RuntimeError("the site holds no replica yet: it is waiting for the host's snapshots")
        return self._replica

    # -- lifecycle --

    async def start(self) -> None:
        """Claim the journal and check the settings (:meth:`claim`), then open the journal,
        rebuild the replica, recover lanes, start the sync client and listen.

        Raises :class:`StartError` (one of its kinds) before anything is touched if another
        daemon runs on this journal or a setting is wrong; whatever else fails half-way, the
        daemon is stopped again and the lock released."""
        t0 = time.perf_counter()
        self.claim()
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        log.info("site %s up in %.2f s: %d till(s), %d pump(s), %d journaled operation(s) re-applied, API %s:%s",
                 self.config.site_id, time.perf_counter() - t0, len(self.tills), len(self.pumps), self._replayed,
                 self.config.api.host, self.port)

    def claim(self) -> None:
        """Everything the daemon checks before it touches the journal, the broker or a device:
        take the journal's lock, load the key files the configuration names, read the broker
        password file, and bind the local API's port (not yet listening). Raises
        :class:`AlreadyRunning`, :class:`KeyFileError`, :class:`PortInUse` or
        :class:`StartError`; on any of them nothing is held."""
        if self.lock.held:
            return
        try:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartError("site.data_dir", f"cannot create {self.journal_path.parent}: "
                             f"{exc.strerror or exc}") from None
        self.lock.acquire({"pid": os.getpid(), "site_id": self.config.site_id, "config": self.config_source,
                           "started_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")})
        try:
            self._load_keys()
            if self._replica is None:
                self._open_store()
            if self.listen:
                self._sock = self._bind()
        except BaseException:
            if self.store is not None:
                self.store.close()
                self.store = None
            self.lock.release()
            raise

    def _open_store(self) -> None:
        """Open the replica store; refuse to start a site that can get no replica: none stored
        and no broker (:class:`NoReplica`), or a broker without the host's key to verify it."""
        needed = tables_needed(self.config)
        if self.config.broker.url and not self.config.keys.host_key_file:
            raise KeyFileError("keys.host_key_file", "required to be provisioned from the host: the host's "
                               f"public replica key ({REPLICA_VERIFY_KEY_FILE}) that verifies its snapshots")
        if not self.config.broker.url and not self.store_path.exists():
            raise NoReplica("broker.url", f"no stored replica ({self.store_path}) and no broker to be provisioned "
                            "from: set broker.url and keys.host_key_file (docs/operations.md, provisioning a new "
                            "site), or run a simulation with --simulated-replica")
        try:
            self.store = ReplicaStore.open(self.store_path)
            complete = self.store.complete(needed)
        except ReplicaStoreError as exc:
            raise ReplicaUnusable("site.data_dir", str(exc)) from None
        if not complete and not self.config.broker.url:
            missing = ", ".join(t.value for t in needed if t not in self.store.versions())
            raise NoReplica("broker.url", f"the stored replica ({self.store_path}) lacks {missing} and there is "
                            "no broker to be provisioned from: set broker.url and keys.host_key_file "
                            "(docs/operations.md), or run a simulation with --simulated-replica")

    def _load_keys(self) -> None:
        """Read every key file the configuration names (a named file must be there even if
        nothing on this site uses it yet). The card issuer key falls back to the simulation's
        public test key only in a simulation (``api.simulation = true``): a site with pumps
        and no ``keys.issuer_key_file`` refuses to start otherwise, since anyone can make
        cards under that key."""
        k = self.config.keys
        if self.keys is None and k.issuer_key_file:
            try:
                self._issuer_keys = SoftwareKeyStore.from_file(k.issuer_key_file)
            except KeyStoreError as exc:
                raise KeyFileError("keys.issuer_key_file", str(exc)) from None
        elif self.keys is None and self.config.pumps and not self.config.api.simulation:
            raise KeyFileError("keys.issuer_key_file", "required at a site with pumps: without it the card keys "
                               "would come from the simulation's public test issuer key, which is used only "
                               "when api.simulation = true")
        if not self.config.broker.url:
            if k.site_key_file:
                self._check_wire_key("keys.site_key_file", k.site_key_file)
            if k.host_key_file:
                self._check_verify_key(k.host_key_file)
            return
        from wire import SiteKeys

        from .sync import SyncError, settings_from_config
        site_key = self._check_wire_key("keys.site_key_file", k.site_key_file)
        verify = self._check_verify_key(k.host_key_file) if k.host_key_file else None
        self._site_keys = SiteKeys({self.config.site_id: site_key}, replica_verify=verify)
        try:
            self._sync_settings = settings_from_config(self.config.broker)
            self._sync_settings.tls_context()
        except SyncError as exc:
            text = str(exc)
            if "password_file" in text:
                raise KeyFileError("broker.password_file", text.removeprefix("broker.password_file ")) from None
            if "CA file" in text:
                raise KeyFileError("broker.tls_ca_file", text) from None
            raise StartError("broker.url", text) from None

    @staticmethod
    def _check_wire_key(setting: str, path: str | None) -> bytes:
        from wire import WireError, load_key
        if not path:
            raise KeyFileError(setting, "required with broker.url")
        try:
            return load_key(path)
        except WireError as exc:
            raise KeyFileError(setting, str(exc)) from None

    @staticmethod
    def _check_verify_key(path: str) -> Any:
        """The host's replica verify key (``keys.host_key_file``: its Ed25519 public key)."""
        from wire import WireError, load_replica_verify_key
        try:
            return load_replica_verify_key(path)
        except WireError as exc:
            raise KeyFileError("keys.host_key_file", str(exc)) from None

    def _bind(self) -> socket.socket:
        """The local API's socket, bound (so the port is ours) but not listening yet."""
        host, port = self.config.api.host, self.config.api.port
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not TIME_WAIT: a live listener still refuses
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse("api.port", f"{host}:{port} is in use by another program; stop it, or set "
                                f"api.port to a free port") from None
            raise StartError("api.port", f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return sock

    async def _start(self) -> None:
        try:
            self.journal = Journal.open(self.journal_path, self.config.site_id,
                                        terminal_kinds=TILL_TERMINAL_KINDS | FUEL_TERMINAL_KINDS)
        except JournalError as exc:
            raise JournalUnusable("site.data_dir", str(exc)) from None
        if self._replica is None:
            await self._provision()
        self.fuel_holds = self.replica.fuel_holds
        if self.replica.site_id is not None:  # the host's replica: re-apply only spend past each row's watermark
            self.replica.follow_own_spend(JournalSpend(self.config.site_id, self._live_journal()))
        self._replayed = self.replica.replay(self._noting_cards(self._all_records()))
        for till_cfg in self.config.tills:
            self.tills[till_cfg.till_id] = TillLane(till_cfg, self.config.site_id, self.replica, self.journal, self.bus)
        by_lane: dict[str, list] = {}
        for txn in self.journal.open_transactions():
            by_lane.setdefault(txn.lane, []).append(txn)
        for till in self.tills.values():
            await till.recover(by_lane.pop(till.lane, []))
        if self.config.pumps:
            await self._open_pumps(by_lane)
        for lane_name, txns in by_lane.items():
            log.error("journal has %d open transaction(s) of lane %s, which this configuration lacks", len(txns),
                      lane_name)
        for lane in self.pumps.values():
            lane.start()
        if self.config.broker.url:
            if self.sync is None:
                await self._start_sync()
        else:
            log.warning("no broker.url configured: journaling only, nothing is sent to the host")
        for till in self.tills.values():
            if till.config.scanner_port:
                self._tasks.append(asyncio.create_task(self._scanner_task(till), name=f"scanner {till.lane}"))
        if self.listen and self._runner is None:
            await self._listen()
        self.serving = True

    async def _listen(self) -> None:
        """Serve the local API on the socket claim() bound (sales only once :attr:`serving`)."""
        self.api = LocalApi(self)
        sock, self._sock = self._sock or self._bind(), None
        bound = sock.getsockname()[1]
        try:
            # TLS, tokens, timeouts: terminal/api.py; on the socket claim() bound
            self._runner, self.port = await self.api.listen(sock)
        except OSError as exc:  # another program bound the same port with SO_REUSEADDR and listened first
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse("api.port", f"{self.config.api.host}:{bound} was taken by "
                            "another program while this daemon started; set api.port to a free port") from None

    async def _start_sync(self) -> None:
        """Start the sync client: it reads the journal and sends what the host has not acked,
        and follows every table the site needs from the versions the store holds (a table not
        held from 0: its retained snapshot is awaited). A simulated replica (no store) follows
        the stop list only, from 0."""
        from wire import Table

        from .sync import SyncClient

        keys = self._site_keys  # loaded and checked by claim()
        follow: dict[Table, int] = {}
        if self.store is not None:
            held = self.store.versions()
            follow = {t: held.get(t, 0) for t in tables_needed(self.config)}
        elif keys.can_verify_replica and self.replica.fuel is not None:
            follow = {Table.STOP_LIST: 0}  # the locally built replica is version 0
        self.sync = SyncClient(self._live_journal(), keys, self._sync_settings, on_fatal=self.fatal,
                               on_replica=self._on_replica if follow else None,
                               replica_versions=follow or None, tables=tuple(follow),
                               stage_part=self._stage_part if self.store is not None else None)
        await self.sync.__aenter__()

    # -- provisioning and replica updates --

    async def _provision(self) -> None:
        """Build the replica from the store; first, if it lacks a table the site needs, follow
        the host until it holds them all, saying every ``progress_interval_s`` how far it got
        (the API answers ``/v1/health`` meanwhile, and 503 to sales)."""
        store = self.store
        assert store is not None  # claim() opened it
        needed = tables_needed(self.config)
        _map_large_blocks()  # frames and columns each their own mapping (docs/sync.md, "Fourth pass")
        if store.complete(needed):
            held = {t: i for t, i in store.info().items() if t in needed}
            age = int(time.time()) - max(i.written_utc_s for i in held.values())
            log.info("serving from the stored replica (%s), last updated by the host %s ago%s",
                     versions_text({t: i.version for t, i in held.items()}), _age_text(age),
                     "; checking the host for newer versions" if self.config.broker.url else "")
        else:
            self._provision_started = time.monotonic()
            if self.config.pumps:  # the fuel columns filled as the parts are staged (docs/sync.md, "Fifth pass")
                self._eager = EagerColumns()
            log.info("no complete replica stored: waiting for the host's snapshots of %s",
                     ", ".join(t.value for t in needed))
            await self._start_sync()
            if self.listen:
                await self._listen()
            while not store.complete(needed):
                if self.failure is not None:
                    raise self.failure
                log.info("provisioning: %s", self.provision_status().text())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._provision_progress(needed), self.progress_interval_s)
        async with self._replica_lock:  # no update lands between reading the store and building on it
            versions = {t: v for t, v in store.versions().items() if t in needed}
            # every table streamed from the store (checked again, by wire.rows_bulk): no table's
            # rows are held whole, the columns are built as they come; those filled while their
            # parts were staged and stored exactly so are not read back (EagerColumns)
            eager, self._eager = self._eager, None
            rows = eager.rows(store, needed) if eager is not None else {t: store.iter_rows(t) for t in needed}
            try:
                self._replica = await asyncio.to_thread(build_replica, self.config, rows, versions=versions,
                                                        impl=self.impl)
            except (ReplicaUpdateError, ReplicaStoreError) as exc:
                raise ReplicaUnusable("site.data_dir", f"the stored replica ({self.store_path}) cannot be "
                                      f"loaded: {exc}") from None
            del rows
        _give_back_freed_memory()  # what receiving and building freed (docs/sync.md, "Third pass")
        if self._provision_started is not None:
            self.provisioned_in_s = time.monotonic() - self._provision_started
            first = self.sync.first_snapshot_at if self.sync is not None else None
            self.provisioned_from_first_part_s = time.monotonic() - first if first is not None else None
            log.info("provisioned from the host in %.2f s (%s from the first snapshot part to the evaluators): %s",
                     self.provisioned_in_s,
                     f"{self.provisioned_from_first_part_s:.2f} s" if first is not None else "no snapshot part",
                     versions_text({t: v for t, v in store.versions().items() if t in needed}))

    async def _provision_progress(self, needed: tuple[Table, ...]) -> None:
        """Return once the store holds every table of ``needed``."""
        assert self.store is not None and self.sync is not None
        async for _ in self.sync.updates():
            if self.store.complete(needed):
                return

    def provision_status(self) -> ProvisionStatus:
        """The tables the site needs, those the store holds, and the snapshot parts collected."""
        needed = tables_needed(self.config)
        held = self.store.versions() if self.store is not None else {}
        collecting = self.sync.snapshots_collecting() if self.sync is not None else {}
        return ProvisionStatus(needed, held, collecting)

    async def _stage_part(self, part: Any, fresh: bool) -> None:
        """A snapshot part, verified: written into the store's staged generation of its table
        (off the event loop; nothing of it is kept in memory)."""
        assert self.store is not None
        async with self._replica_lock:
            eager = self._eager
            try:
                fill = eager.plan(part, fresh, self.store) if eager is not None else None
            except Exception as exc:  # noqa: BLE001 - the columns are an optimisation: the build reads the store
                log.warning("provisioning: the fuel columns will be read back from the store: %r", exc)
                eager = self._eager = fill = None
            started = threading.Event()
            # submitted now (not when the loop next runs a task): the fill below runs beside it
            write = asyncio.get_running_loop().run_in_executor(None, functools.partial(
                self.store.stage_part, part, fresh=fresh, started=started))
            if fill is not None:  # while the store writes the part (SQLite without the interpreter lock)
                assert eager is not None
                started.wait(1.0)  # the write is in its statement: it needs the interpreter lock no more
                eager.fill(fill, part)
            try:
                ok = await asyncio.shield(write)
            except asyncio.CancelledError:  # the session ended: the store stays locked until the write is done
                ok = await write
                if fill is not None and eager is not None:
                    eager.written(fill, ok, self.store.staging_generation(part.table))
                raise
            except BaseException:
                if eager is not None:
                    eager.failed(part.table)
                raise
            if fill is not None and eager is not None:
                eager.written(fill, ok, self.store.staging_generation(part.table))

    async def _on_replica(self, update: FollowerUpdate) -> None:
        """A replica update from the host, in version order: into the store first (written in
        its transaction, off the event loop), then into the evaluators, then the store's commit.
        If either refuses it, the store's transaction is rolled back and the exception tells
        the sync client to keep the old version and ask for a snapshot. A snapshot staged part
        by part is read back from the store for the evaluators
        (:func:`terminal.snapshot_swap.apply_snapshot`: fuel cards built off the loop)."""
        from wire import Table

        async with self._replica_lock:
            if self.store is None:
                self._apply_stop_list(update)  # a simulated replica follows the stop list only
                return
            staged = await asyncio.to_thread(self.store.stage, update)
            try:
                if self._replica is not None:
                    if isinstance(update, StagedSnapshot) and update.table is Table.STOP_LIST:  # compared off the loop
                        change = await apply_stop_list_snapshot(self._replica, update.version,
                                                                lambda: (r.card_no for r in staged.iter_rows()))
                        self.bus.publish("replica.stop_list", "site", **stop_list_event(
                            change.version, change.listed, change.unlisted, size=change.size))
                    elif (isinstance(update, StagedSnapshot) and update.table is Table.CLUB_ACCOUNTS
                          and can_swap_club(self._replica)):  # built off the loop, swapped on it
                        await apply_club_snapshot(self._replica, update.version, staged.iter_rows)
                    elif isinstance(update, StagedSnapshot):  # big tables built off the loop, swapped on it
                        await apply_snapshot(self._replica, update.table, update.version, staged.iter_rows,
                                             self._apply_to_evaluators)
                    else:
                        self._apply_to_evaluators(update)
            except BaseException as exc:
                await asyncio.to_thread(staged.rollback)
                log.error("replica update of %s refused by the evaluators, store unchanged: %s",
                          update.table.value, exc)
                raise
            try:
                if self._replica is not None:  # rows that name this site no more keep their mark (the balance rule)
                    await self._replica.persist_marks()
            except Exception as exc:  # the journal's meta failed: the evaluators are ahead of the disk
                await asyncio.to_thread(staged.rollback)
                self.fatal(exc)
                raise
            try:
                info = await asyncio.to_thread(staged.commit)
            except ReplicaStoreError as exc:  # the evaluators are ahead of the disk: restart from the store
                self.fatal(exc)
                raise
            log.info("replica %s at version %d (%d rows) stored", info.table.value, info.version, info.rows)
            if self._replica is not None:  # marks no stored row needs any more: after the commit
                try:
                    await self._replica.drop_marks()
                except Exception as exc:  # kept for the next update (or the next start): harmless meanwhile
                    log.error("kept balance marks not dropped from the journal's meta: %s", exc)

    def _apply_to_evaluators(self, update: ReplicaUpdate) -> None:
        """Apply ``update`` to the evaluators, all or nothing (:meth:`Replica.apply_update`
        raises :class:`ReplicaUpdateError` on a consistency failure and changes nothing)."""
        from wire import ReplicaDelta, Table

        self.replica.apply_update(update)
        if update.table is Table.STOP_LIST:  # the pump consoles' event stream shows each block: one event a version
            if isinstance(update, ReplicaDelta):
                data = stop_list_event(update.to_version, [r.card_no for r in update.upserts],
                                       [str(k) for k in update.deletes])
            else:
                data = stop_list_event(update.version, [r.card_no for r in update.rows], [], size=len(update.rows))
            self.bus.publish("replica.stop_list", "site", **data)

    def _apply_stop_list(self, update: FollowerUpdate) -> None:
        """The stop list applied to the fuel evaluator at once (a block reaches the pumps within
        seconds)."""
        from wire import ReplicaDelta, Table

        if update.table is not Table.STOP_LIST or self.replica.fuel is None:
            return
        assert not isinstance(update, StagedSnapshot)  # no store, no staging: the sync client keeps the parts
        fuel = self.replica.fuel
        if isinstance(update, ReplicaDelta):
            changes = [(row.card_no, True) for row in update.upserts] + [(key, False) for key in update.deletes]
        else:  # a whole stop list: everything not in it comes off
            listed = {row.card_no for row in update.rows}
            was = set(fuel.stop_list_numbers()) | self._host_stop_list
            changes = [(no, False) for no in was - listed] + [(no, True) for no in listed]
            self._host_stop_list = listed
        for card_no, on in changes:
            fuel.set_stop_listed(card_no, on)
            if isinstance(update, ReplicaDelta):
                (self._host_stop_list.add if on else self._host_stop_list.discard)(card_no)
        self.bus.publish("replica.stop_list", "site", **stop_list_event(
            update.to_version if isinstance(update, ReplicaDelta) else update.version,
            [no for no, on in changes if on], [no for no, on in changes if not on]))
        log.info("stop list at version %s: %d change(s) applied",
                 update.to_version if isinstance(update, ReplicaDelta) else update.version, len(changes))

    async def _open_pumps(self, by_lane: dict[str, list]) -> None:
        """Create each pump's lane, take its devices and recover what the last run left open."""
        keys = self.keys or self._default_keys()
        for cfg in self.config.pumps:
            pump = self._pump_devices.get(cfg.pump_id)
            if pump is None and cfg.driver is not None:  # a real dispenser (hw.dispensers)
                pump = self._dispenser_links.pump(cfg.pump_id, cfg.driver)
            if pump is None:
                pump = RecordedSimPump(cfg.pump_id, products=cfg.products or None,
                                       flow_ml_per_min=cfg.flow_ml_per_min,
                                       state_path=self.config.data_dir / "pumps" / f"pump-{cfg.pump_id}.json")
            lane = FuelLane(cfg, self.config, self.replica, self._live_journal(), self.bus, keys, pump,
                            timeouts=self.fuel_timeouts, holds=self.fuel_holds,
                            card_counters_seen=self.card_counters_seen, on_fatal=self.fatal)
            self.pumps[cfg.pump_id] = lane
            await lane.open()
            await lane.recover(by_lane.pop(lane.lane, []))

    def _default_keys(self) -> KeyStore:
        if self._issuer_keys is not None:  # keys.issuer_key_file, read by claim()
            return self._issuer_keys
        log.warning("no keys.issuer_key_file configured: using the simulation's PUBLIC test issuer key "
                    "(never on a real site)")
        return sim_key_store()

    def _noting_cards(self, records):
        """Pass journal records through, noting the fuel cards' transaction counters."""
        seen = self.card_counters_seen
        for rec in records:
            if rec.kind == PREAUTH:
                c = rec.body["card"]
                seen[c["card_no"]] = max(seen.get(c["card_no"], 0), c["expected_txn"])
            elif rec.kind in (RESERVED, CARD_COMMITTED, VOIDED) and rec.body.get("txn_counter") is not None:
                no = rec.body["card_no"]
                seen[no] = max(seen.get(no, 0), rec.body["txn_counter"])
            yield rec

    def _all_records(self, batch: int = 10_000):
        journal, seq = self._live_journal(), 0
        while True:
            chunk = journal.after(seq, batch)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq or seq

    def _live_journal(self) -> Journal:
        """The open journal; :class:`JournalClosedError` when the daemon is not running."""
        if self.journal is None:
            raise JournalClosedError("the daemon's journal is not open")
        return self.journal

    async def stop(self) -> None:
        """Stop listening, stop device tasks, close the journal, release the journal's lock."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._runner is not None:
            if self.api is not None:
                self.api.close_streams()
            await self._runner.cleanup()
            self._runner = None
        for lane in self.pumps.values():
            await lane.close()
        if self.sync is not None:
            from .sync import SyncError
            with contextlib.suppress(SyncError):
                await self.sync.stop()
            self.sync = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self.store is not None:
            async with self._replica_lock:  # an update being applied finishes first
                self.store.close()
            self.store = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.lock.release()  # last: the journal is closed
        self.stopped.set()

    def fatal(self, exc: BaseException) -> None:
        """Something the daemon cannot go on after (the journal failed): stop."""
        self.failure = exc
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- devices --

    async def _scanner_task(self, till: TillLane) -> None:
        cfg = till.config
        if not cfg.scanner_port:
            return
        scanner = Scanner(ScannerConfig(port=cfg.scanner_port, baudrate=cfg.scanner_baudrate,
                                        suffix=cfg.scanner_suffix))
        self.scanners[cfg.till_id] = scanner
        async with scanner:
            async for ev in scanner:
                if isinstance(ev, Scan) and ev.kind is ScanKind.CLUB_CARD:
                    await till.on_scan(ev.code)
                elif isinstance(ev, ScanNoise):
                    self.bus.publish("till.scan_noise", till.lane, reason=ev.reason)

    # -- views for the API --

    def health(self) -> dict[str, Any]:
        """Up, since when, what the journal holds, the replica (its source, versions and age),
        and, while a new site waits for its snapshots, how far provisioning got."""
        status = "failing" if self.failure is not None else "ok" if self.serving or self._replica else "provisioning"
        return {"status": status, "site_id": self.config.site_id, "serving": self.serving,
                "uptime_s": int(time.time() - self.started_at),
                "journal": dataclasses.asdict(self.journal.counts()) if self.journal else None,
                "replica": self._replica_view(),
                "provisioning": self.provision_status().as_dict() if self.store is not None else None,
                "pumps": {str(p.pump_id): p.state.value for p in self.pumps.values()},
                "sync": _plain(dataclasses.asdict(self.sync.status())) if self.sync else None}

    def _replica_view(self) -> dict[str, Any]:
        r = self._replica
        view: dict[str, Any] = {
            "source": "host" if self.store is not None else "simulated",
            "fuel_cards": len(r.fuel_model.cards) if r is not None and r.fuel_model else 0,
            "club_cards": len(r.club_model.cards) if r is not None and r.club_model else 0,
            "evaluator": getattr(r.fuel or r.club, "name", None) if r is not None else None}
        if self.store is not None:
            info = self.store.info()
            written = max((i.written_utc_s for i in info.values()), default=None)
            view |= {"versions": {t.value: i.version for t, i in info.items()},
                     "rows": {t.value: i.rows for t, i in info.items()},
                     "updated_utc_s": written, "age_s": int(time.time()) - written if written else None}
        return view

    def lane_views(self) -> list[dict[str, Any]]:
        """Each lane and what it is doing."""
        out: list[dict[str, Any]] = []
        for till in self.tills.values():
            open_sale = till._open_sale()
            out.append({"lane": till.lane, "kind": "till", "open_sale": open_sale.sale_id if open_sale else None,
                        "scanner": till.config.scanner_port})
        for lane in self.pumps.values():
            v = lane.view(brief=True)
            out.append({"lane": lane.lane, "kind": "pump", "pump": lane.pump_id, "state": v["state"],
                        "pump_state": v["pump_state"], "card": v["card"],
                        "open_txn": v["txn"]["txn_id"] if v["txn"] else None})
        return out

    def extra_routes(self) -> list[tuple[str, str, Any]]:
        """The pump console's routes, added to the local API (terminal/fuel_api.py)."""
        return fuel_api.routes(self)

    def journal_view(self, limit: int, lane: str | None) -> list[dict[str, Any]]:
        """The latest records, card numbers masked."""
        return [{"seq": r.seq, "record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind,
                 "at_utc_s": r.at_utc_s, "body": _mask_body(r.body)} for r in self._live_journal().tail(limit, lane=lane)]
