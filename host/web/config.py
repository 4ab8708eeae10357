"""What the cabinets' web application is configured with (:class:`WebConfig`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from host.outbox import SmsGateway, SmtpMailer
from host.passwords import PARAMETERS, Argon2Parameters

__all__ = ["WebConfig"]


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The cabinets' settings.

    ``base_url`` is where users reach the cabinets (it goes into activation links);
    ``secure_cookies`` False drops ``Secure`` and the ``__Host-`` prefix (only for a plain
    HTTP test client that is no browser); ``sms_inbound_token`` authenticates the SMS
    gateway's inbound calls (``None``: the inbound endpoint is off).
    """

    db_url: str
    base_url: str
    mailer: SmtpMailer | None = None
    sms: SmsGateway | None = None
    argon2: Argon2Parameters = PARAMETERS
    clock: Callable[[], float] = time.time
    secure_cookies: bool = True
    sms_inbound_token: str | None = None
    outbox_interval_s: float = 0.2
    extra: dict = field(default_factory=dict)
