"""The model lock: one forward pass (or one registry change) at a time, handed over in priority order."""

import heapq
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# TurnLock priorities: registry changes (load, activate) first, then the engine's forward passes
REGISTRY, DECODE = 0, 1


class TurnLock:
    """A reentrant lock handed over in order: lower `priority` first, then first come, first served.

    Python's RLock lets whichever thread wakes first win, so a request arriving among busy chats could wait many of
    their decode steps for its first forward pass. Here a registry change (load, activate: plain `with lock`) and
    then a request's prefill go before the next decode step, and decode steps take turns."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, ticket)
        self._tickets = itertools.count()
        self._owner: int | None = None
        self._depth = 0

    @contextmanager
    def turn(self, priority: int = REGISTRY) -> Iterator[None]:
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def acquire(self, priority: int = REGISTRY) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            entry = (priority, next(self._tickets))
            heapq.heappush(self._waiting, entry)
            try:
                while self._owner is not None or self._waiting[0] != entry:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the queue to the others
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
