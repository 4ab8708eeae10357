"""``edgepos host serve``: run the cabinets and the fleet API until stopped (SIGINT/SIGTERM)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl

from host.outbox import FileSmsGateway, SmtpMailer

from .config import WebConfig

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(sp: argparse.ArgumentParser) -> None:
    """The options of ``serve``."""
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    sp.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    sp.add_argument("--base-url", help="the address users reach the cabinets at, for e-mailed links "
                    "(default http://HOST:PORT)")
    sp.add_argument("--smtp", default=os.environ.get("EDGEPOS_SMTP", ""), help="SMTP server HOST:PORT for e-mail "
                    "(default $EDGEPOS_SMTP; none: e-mail waits in the outbox)")
    sp.add_argument("--mail-from", default="cabinet@localhost", help="the sender of the cabinets' e-mail")
    sp.add_argument("--sms-file", help="SMS gateway: append messages as JSON lines to this file")
    sp.add_argument("--sms-inbound-token-file", help="a file holding the token the SMS gateway sends with inbound "
                    "SMS (X-Gateway-Token); without it inbound SMS are refused")
    sp.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    sp.add_argument("--tls-key", help="the certificate's key (PEM)")


def config_from_args(db_url: str, a: argparse.Namespace) -> WebConfig:
    """A :class:`WebConfig` from ``serve``'s options."""
    mailer = None
    if a.smtp:
        host, _, port = a.smtp.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--smtp is HOST:PORT, got {a.smtp!r}")
        mailer = SmtpMailer(host, int(port), a.mail_from)
    token = None
    if a.sms_inbound_token_file:
        with open(a.sms_inbound_token_file, encoding="utf-8") as f:
            token = f.read().strip() or None
    scheme = "https" if a.tls_cert else "http"
    return WebConfig(db_url=db_url, base_url=(a.base_url or f"{scheme}://{a.host}:{a.port}").rstrip("/"),
                     mailer=mailer, sms=FileSmsGateway(a.sms_file) if a.sms_file else None, sms_inbound_token=token)


def run(cfg: WebConfig, host: str, port: int, *, tls_cert: str | None = None, tls_key: str | None = None,
        print_fn=print) -> None:
    """Serve until interrupted."""
    from aiohttp import web  # the app and its templates load only when serving

    from .access_log import SafeAccessLogger
    from .app import create_app
    ctx = None
    if tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls_cert, tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print_fn(f"edgepos host: cabinets at {cfg.base_url}/fleet and {cfg.base_url}/club, fleet API at "
             f"{cfg.base_url}/api/v1", flush=True)
    web.run_app(create_app(cfg), host=host, port=port, ssl_context=ctx, access_log_class=SafeAccessLogger,
                print=None, handle_signals=True)
