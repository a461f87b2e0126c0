"""Login throttling for Gradio's `auth=` callable: exponential back-off per client address and per account, never a
global lock.

Each key — a client address, an account, or an (address, account) pair that logged in before — counts its recent
failures. After `free_failures` of them the key must wait `base_delay_s * 2**(failures - free_failures)` seconds
(capped at `max_delay_s`) after its last failure before its next attempt is even checked; a refused attempt gets
HTTP 429 with `Retry-After`. Failures older than `forget_s` are forgotten.

- Spraying passwords over many usernames from one address slows that address only: other addresses, and a user
  logging in from an address where they logged in before, are not affected.
- Guessing one account's password from many addresses slows every *new* address for that account, but not the
  account's owner at an address they logged in from before (their pair key has its own count).

The password check (scrypt, ~30 ms+) runs in a worker thread, so a flood of attempts does not stall the event loop.
Gradio calls the callable without the request: the address comes from `webapp.http_guard.CLIENT_ADDRESS`.

    throttle = LoginThrottle(services.auth.login)
    gr.mount_gradio_app(app, demo, "/", auth=throttle.login)
"""

import asyncio
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException

from webapp.http_guard import CLIENT_ADDRESS

log = logging.getLogger("tuneloop.auth")

MAX_USERNAME_CHARS = 256  # longer names are refused outright and never stored as keys
MAX_KEYS = 100_000  # failure records kept (oldest dropped first): memory stays bounded under spraying


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    def __init__(self, check: Callable[[str, str], bool], free_failures: int = 5, base_delay_s: float = 1.0,
                 max_delay_s: float = 900.0, forget_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.check = check
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.forget_s = forget_s
        self.clock = clock
        self._failures: OrderedDict[tuple, _Failures] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()  # (address, username) that logged in
        self._lock = threading.Lock()

    async def login(self, username: str, password: str) -> bool:
        """The `auth=` callable (a coroutine function, so Gradio awaits it)."""
        address = CLIENT_ADDRESS.get()
        if len(username) > MAX_USERNAME_CHARS:
            return False
        keys = self.keys(address, username)
        wait_s = self.wait_s(keys)
        if wait_s > 0:
            log.warning("Login for %r from %s refused for %.0f s: too many failed attempts.", username[:64],
                        address, wait_s)
            raise HTTPException(429, f"Too many failed logins: try again in {math.ceil(wait_s)} s.",
                                headers={"Retry-After": str(math.ceil(wait_s))})
        ok = await asyncio.to_thread(self.check, username, password)
        self.record(address, username, keys, ok)
        return ok

    def keys(self, address: str, username: str) -> list[tuple]:
        with self._lock:
            if (address, username) in self._known:
                return [("pair", address, username)]
        return [("address", address), ("account", username)]

    def wait_s(self, keys: list[tuple]) -> float:
        """Seconds until the slowest of `keys` may try again (0: now)."""
        now, waits = self.clock(), [0.0]
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if failures is None or now - failures.last >= self.forget_s:
                    continue
                over = failures.count - self.free_failures
                if over >= 0:
                    delay = min(self.max_delay_s, self.base_delay_s * 2 ** min(over, 32))
                    waits.append(failures.last + delay - now)
        return max(waits)

    def record(self, address: str, username: str, keys: list[tuple], ok: bool) -> None:
        now = self.clock()
        with self._lock:
            if ok:
                for key in (*keys, ("pair", address, username)):
                    self._failures.pop(key, None)
                self._known[(address, username)] = None
                self._known.move_to_end((address, username))
                while len(self._known) > MAX_KEYS:
                    self._known.popitem(last=False)
                return
            for key in keys:
                failures = self._failures.pop(key, None)
                if failures is None or now - failures.last >= self.forget_s:
                    failures = _Failures(0, now)
                failures.count, failures.last = failures.count + 1, now
                self._failures[key] = failures  # re-inserted last: the dict stays ordered by last failure
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
        log.info("Failed login for %r from %s.", username[:64], address)
