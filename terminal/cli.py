"""The ``edgepos`` command line: one command, a subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys

from authz.errors import AuthzError


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
        prog="edgepos",
        description="Edge transaction processor for fuel-station pumps and retail checkout tills.",
        epilog="Run 'edgepos COMMAND --help' for a command's options.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    site = sub.add_parser(
        "simulate", help="run a simulated site: the daemon, simulated devices and people",
        description="Run the edge daemon of the embedded site (a filling station and a store) "
                    "with simulated devices (barcode scanners on ptys; virtual fuel cards through "
                    "pcscd and simulated dispensers when the site has pumps) and a traffic "
                    "generator of shoppers and drivers talking to its local API, for a set "
                    "simulated time. Progress goes to stderr; the summary, checked against the "
                    "journal, to stdout.")
    site.add_argument("--minutes", type=_positive, default=120, metavar="N",
                      help="simulated minutes to run (default 120)")
    site.add_argument("--speed", type=_positive, default=240, metavar="X",
                      help="simulated seconds per real second (default 240: 2 hours in 30 s)")
    site.add_argument("--config", metavar="FILE", help="site configuration (default: the embedded one)")
    site.add_argument("--fuel-cards", type=_positive, default=2_000, metavar="N", help="fuel cards in the replica")
    site.add_argument("--club-accounts", type=_positive, default=2_000, metavar="N", help="club accounts")
    site.add_argument("--seed", type=int, default=1, help="random seed of the replica and the traffic")

    hostp = sub.add_parser(
        "host", help="the central host's admin commands (cards, limits, blocks, reports...)",
        description="The central host's admin command line; 'edgepos host --help' lists its commands "
                    "(the same as python -m host.admin).", add_help=False)
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
        "run", help="run the edge daemon of a site",
        description="Run the edge daemon: open the journal, rebuild the replica from it, recover "
                    "every lane's open transaction, then serve the local API until SIGTERM or "
                    "Ctrl-C. Without --config, the embedded simulated site's configuration.")
    run.add_argument("--config", metavar="FILE", help="the site's TOML configuration")
    run.add_argument("--fuel-cards", type=_positive, default=10_000, metavar="N",
                     help="cards in the generated replica (until host snapshots exist; default 10000)")
    run.add_argument("--club-accounts", type=_positive, default=5_000, metavar="N",
                     help="club accounts in the generated replica (default 5000)")
    run.add_argument("--stop-list", type=int, default=0, metavar="N",
                     help="pad the generated stop list to N entries (cards of other issuers)")
    run.add_argument("--seed", type=int, default=1, help="seed of the generated replica")
    run.add_argument("--evaluator", choices=("native", "reference"), default=None,
                     help="evaluator implementation (default native)")
    return ap


def _run_daemon(args) -> int:
    import asyncio
    import signal

    from .config import load_config
    from .daemon import Daemon
    from .replica import Replica

    config = load_config(args.config)
    replica = Replica.simulated(config, fuel_cards=args.fuel_cards, club_accounts=args.club_accounts,
                                stop_list=args.stop_list, seed=args.seed, impl=args.evaluator)

    async def serve() -> int:
        daemon = Daemon(config, replica)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.start()
        print(f"edgepos: site {config.site_id} listening on http://{config.api.host}:{daemon.port}",
              file=sys.stderr, flush=True)
        waiter = asyncio.create_task(daemon.stopped.wait())
        await asyncio.wait([asyncio.create_task(stop.wait()), waiter], return_when=asyncio.FIRST_COMPLETED)
        await daemon.stop()
        if daemon.failure is not None:
            print(f"edgepos: stopped after a failure: {daemon.failure}", file=sys.stderr)
            return 1
        return 0

    return asyncio.run(serve())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgepos`` console command."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["host"]:  # the host's own command line takes everything after "host"
        from host.admin import main as host_main
        return host_main(raw[1:])
    ap = build_parser()
    args = ap.parse_args(raw)
    # the simulation's progress lines say what happens; the daemon's log is for -v there
    quiet = args.command == "simulate" and not args.verbose
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        ap.print_help()
        return 2
    from .config import ConfigError
    try:
        if args.command == "run":
            return _run_daemon(args)
        if args.command == "simulate":
            import asyncio

            from .config import load_config
            from .simsite import run_site
            from .simsite import stderr_progress as site_progress
            report = asyncio.run(run_site(config=load_config(args.config) if args.config else None,
                                          sim_seconds=args.minutes * 60, speed=args.speed, seed=args.seed,
                                          fuel_cards=args.fuel_cards, club_accounts=args.club_accounts,
                                          progress=site_progress))
            print(report.render())
            return 0
        if args.command == "evaluate-day":
            from .dayrun import run_day, stderr_progress
            summary = run_day(fuel_cards=args.fuel_cards, fuel_requests=args.fuel_requests,
                              club_accounts=args.club_accounts, club_sales=args.club_sales,
                              seed=args.seed, impl=args.evaluator, progress=stderr_progress)
            print(summary.render())
            return 0
    except (AuthzError, ConfigError) as exc:
        print(f"edgepos: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edgepos: interrupted", file=sys.stderr)
        return 130
    ap.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
