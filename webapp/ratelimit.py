"""Login rate limiting for Gradio's `launch(auth=...)`: per-username lockout plus a global failure budget.

Gradio calls the auth callable inside its async /login route, with no client address. So failures are counted
per username (stops guessing one account's password) and overall (stops spraying one password over many names):
after `max_failures` failures of one username within `window_s`, that username is refused without checking the
password until the failures age out; after `max_global_failures` failures of any usernames within `window_s`,
every login is refused for that time. The password check (scrypt, ~30 ms+) runs in a worker thread, so a flood
of login attempts does not stall the event loop that serves everyone else.

    limiter = LoginRateLimiter(services.auth.login)
    demo.launch(auth=limiter.login, ...)
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("tuneloop.auth")

MAX_USERNAME_CHARS = 256  # longer names are refused outright and never stored as keys


class LoginRateLimiter:
    def __init__(self, check: Callable[[str, str], bool], max_failures: int = 5, max_global_failures: int = 100,
                 window_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.max_failures = max_failures
        self.max_global_failures = max_global_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._global: deque[float] = deque()
        self._lock = threading.Lock()

    async def login(self, username: str, password: str) -> bool:
        """The `launch(auth=...)` callable (a coroutine function, so Gradio awaits it)."""
        if len(username) > MAX_USERNAME_CHARS or not self.allowed(username):
            log.warning("Login for %r refused: too many failed attempts.", username[:64])
            return False
        ok = await asyncio.to_thread(self.check, username, password)
        self.record(username, ok)
        return ok

    def allowed(self, username: str) -> bool:
        with self._lock:
            now = self.clock()
            self._expire(self._global, now)
            failures = self._failures.get(username)
            if failures is not None:
                self._expire(failures, now)
            return len(self._global) < self.max_global_failures and (
                failures is None or len(failures) < self.max_failures)

    def record(self, username: str, ok: bool) -> None:
        """A success clears the username's failures; a failure counts for the username and globally."""
        with self._lock:
            if ok:
                self._failures.pop(username, None)
                return
            now = self.clock()
            self._failures.setdefault(username, deque()).append(now)
            self._global.append(now)
            if len(self._failures) > 10 * self.max_global_failures:  # keep memory bounded under spraying
                self._failures = {u: f for u, f in self._failures.items() if self._expire(f, now)}
            log.info("Failed login for %r (%d recent failures).", username[:64], len(self._failures[username]))

    def _expire(self, stamps: deque[float], now: float) -> int:
        while stamps and now - stamps[0] >= self.window_s:
            stamps.popleft()
        return len(stamps)
