"""A small HTTP client over real loopback sockets for the cabinet tests: keeps cookies the
way a browser on a secure context (http://127.0.0.1 counts as one in chromium) does,
including ``Secure`` ``__Host-`` cookies, and does not follow redirects (tests look at them)."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    @property
    def location(self) -> str | None:
        return self.header("Location")

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, "no CSRF field on the page"
        return m.group(1)


@dataclass
class Client:
    """Cookies and the base URL of one simulated browser."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    address: str = "127.0.0.1"

    def request(self, method: str, path: str, *, form: dict[str, str] | None = None, json_body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        u = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json_body
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        ans = Answer(r.status, r.getheaders(), r.read())
        conn.close()
        for raw in ans.set_cookies():
            c = SimpleCookie()
            c.load(raw)
            for name, morsel in c.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return ans

    def get(self, path: str, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str] | None = None, **kw) -> Answer:
        return self.request("POST", path, form=form, **kw)

    def submit(self, page: str, action: str, fields: dict[str, str]) -> Answer:
        """GET ``page`` for its CSRF token, then POST ``fields`` to ``action``."""
        token = self.get(page).csrf()
        return self.post(action, {"csrf": token, **fields})
