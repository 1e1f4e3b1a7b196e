"""The page's cookie sessions ("visits", to keep them apart from the daemon's heartbeated sessions).

A visit starts when a browser first loads the page: a random cookie (HttpOnly, Secure, SameSite=Strict, `__Host-`)
and a CSRF token the page sends in a header on every state-changing request. Logging in with an API key gives a
new visit (a new cookie: one set before login is worth nothing after it) that holds the daemon's bearer token
server-side; the browser never sees it. The table is bounded: at most MAX_VISITS anonymous visits and MAX_LOGINS
logged-in ones, the least recently used going first, and each ends after a time without use. Cookies are looked
up by their SHA-256, so the table holds no cookie and a lookup's time says nothing about one.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "__Host-rover-safety"  # __Host-: only this origin over a secure context, path /, no Domain
MAX_VISITS = 256
MAX_LOGINS = 64
VISIT_IDLE = 3600.0  # seconds an anonymous visit lives without a request
LOGIN_IDLE = 12 * 3600.0  # seconds a login lives without a request (the token may die sooner: token_ttl, reload)


@dataclass(eq=False)
class Visit:
    """One browser's standing with the page."""

    csrf: str = field(repr=False)
    key_id: str | None = None
    token: str | None = field(default=None, repr=False)  # the daemon's bearer token; never sent to the browser
    used: float = 0.0
    watchers: int = 0  # live event streams
    ended: bool = False  # logged out, replaced or evicted: its streams end, its cookie is refused

    @property
    def logged_in(self) -> bool:
        return self.token is not None


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class Visits:
    """Cookie -> visit, bounded and expiring."""

    def __init__(self, *, max_visits: int = MAX_VISITS, max_logins: int = MAX_LOGINS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max = {False: max_visits, True: max_logins}
        self._idle = {False: VISIT_IDLE, True: LOGIN_IDLE}
        self._tables: dict[bool, collections.OrderedDict[str, Visit]] = {
            False: collections.OrderedDict(), True: collections.OrderedDict()}

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())

    @property
    def logins(self) -> int:
        """How many visits are logged in."""
        return len(self._tables[True])

    def find(self, cookie: str | None) -> Visit | None:
        """The live visit of this cookie (counted as used now), or None."""
        if not cookie or len(cookie) > 128:
            return None
        key, now = _digest(cookie), self._clock()
        for logged_in, table in self._tables.items():
            visit = table.get(key)
            if visit is None:
                continue
            if now - visit.used > self._idle[logged_in]:
                self._drop(table, key)
                return None
            visit.used = now
            table.move_to_end(key)
            return visit
        return None

    def new(self, key_id: str | None = None, token: str | None = None) -> tuple[str, Visit]:
        """A new visit and its cookie; the least recently used of its kind ends when the table is full."""
        cookie = secrets.token_urlsafe(32)
        visit = Visit(secrets.token_urlsafe(32), key_id, token, self._clock())
        table = self._tables[visit.logged_in]
        self._expire(table, visit.logged_in)
        while len(table) >= self._max[visit.logged_in]:
            self._drop(table, next(iter(table)))
        table[_digest(cookie)] = visit
        return cookie, visit

    def log_in(self, old_cookie: str | None, key_id: str, token: str) -> tuple[str, Visit]:
        """End the visit of `old_cookie` and start a logged-in one in its place."""
        self.end(old_cookie)
        return self.new(key_id, token)

    def end(self, cookie: str | None) -> None:
        if not cookie:
            return
        key = _digest(cookie)
        for table in self._tables.values():
            if key in table:
                self._drop(table, key)

    def end_token(self, token: str) -> None:
        """The daemon refused this token (revoked, expired, restarted): log out every visit holding it."""
        table = self._tables[True]
        for key in [k for k, v in table.items() if v.token == token]:
            self._drop(table, key)

    def _expire(self, table: collections.OrderedDict[str, Visit], logged_in: bool) -> None:
        horizon = self._clock() - self._idle[logged_in]
        while table:
            key, visit = next(iter(table.items()))
            if visit.used >= horizon:
                return
            self._drop(table, key)

    @staticmethod
    def _drop(table: collections.OrderedDict[str, Visit], key: str) -> None:
        visit = table.pop(key)
        visit.ended = True
        visit.token = None
