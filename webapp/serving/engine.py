"""Continuous batching for the model service: one thread decodes every request, concurrent ones in one batch.

A request (a chat turn, or one answer of a generation job) is a `Ticket`. The engine thread admits waiting tickets
into their lane's running batch between two decode steps (a lane: the shared LoRA model, whose rows may mix
versions, or one full-weight model), prefills new prompts `chunk` tokens per forward pass with a decode step of the
running rows in between (a long prompt cannot stall the others), and hands each ticket its text after every step.
Prefills run side by side, the one with the fewest passes left first: a short chat arriving during another user's
1,024-token prefill gets its first token after at most one of that prefill's passes (issue 13, finding 2).
Jobs never take the last `reserved` rows of a lane, so a chat always finds room at the next step.
The chat template's shared prefix is prefilled once per lane and version (training.generation's prefix cache); the
cache outlives idle lanes and `forget(version)` drops a version's entries when its weights go.

    engine = Engine(tokenizer, route, release)          # ModelService builds it
    ticket = engine.submit(Request(messages, adapter="v3"), stream=True)
    for text, stats in ticket.updates(): ...
"""

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from training.generation import Batch, Forward, PrefixCache, Request, Row, prompt_ids, stop_ids, template_prefix

log = logging.getLogger("tuneloop.engine")
CHAT, JOB = 0, 1  # admission priority: chats first


@dataclass(frozen=True)
class Route:
    """Where a version's rows decode: the lane (batch) key, its forward pass, and the row's adapter in that lane."""

    lane: str
    forward: Forward
    adapter: str | None


@dataclass(eq=False)
class Ticket:
    request: Request
    version: str
    route: Route
    priority: int
    stream: bool
    row: Row
    started: float = field(default_factory=time.perf_counter)
    first_token_s: float = 0.0
    cancelled: bool = False
    _out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _order: int = 0
    _sent: int | None = None  # tokens in the last text sent

    def stats(self) -> dict:
        return {"version": self.version, "prompt_tokens": len(self.row.prompt_ids),
                "new_tokens": len(self.row.new_ids), "first_token_s": self.first_token_s,
                "total_s": time.perf_counter() - self.started}

    def updates(self) -> Iterator[tuple[str, dict]]:
        """(text so far, stats) after each token when streaming, else once; ends when the answer is complete."""
        while (item := self._out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass(eq=False)
class _Prefill:
    """Tickets whose prompts prefill together (left-padded), one chunk per forward pass."""

    tickets: list[Ticket]
    passes: Iterator[None]
    passes_left: int
    priority: int
    order: int


@dataclass(eq=False)
class _Lane:
    batch: Batch
    prefills: list[_Prefill] = field(default_factory=list)
    tickets: dict[int, Ticket] = field(default_factory=dict)  # id(row) -> ticket, rows in the batch

    def joining(self) -> list[Ticket]:
        return [ticket for prefill in self.prefills for ticket in prefill.tickets]


class Engine:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, guard: Callable, release: Callable[[str], None],
                 max_batch: int = 16, reserved: int = 4, chunk: int = 64) -> None:
        self.tokenizer, self.guard, self.release = tokenizer, guard, release
        self.max_batch, self.reserved, self.chunk = max_batch, reserved, chunk
        self._stops, self._pad = stop_ids(tokenizer), tokenizer.pad_token_id or 0
        self.prefix = template_prefix(tokenizer)  # [] turns the prefix cache off (bench/generation.py compares)
        self._prefixes: dict[str, PrefixCache] = {}  # lane key -> its prefix cache
        self._waiting: list[Ticket] = []
        self._lanes: dict[str, _Lane] = {}
        self._wake = threading.Condition()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def submit(self, request: Request, version: str, route: Route, priority: int = CHAT,
               stream: bool = True) -> Ticket:
        ticket = Ticket(request, version, route, priority, stream, Row(request, prompt_ids(self.tokenizer,
                                                                                           request.messages)))
        ticket._order = next(self._order)
        with self._wake:
            self._waiting.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tuneloop-engine", daemon=True)
                self._thread.start()
            self._wake.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        with self._wake:
            ticket.cancelled = True
            self._wake.notify()

    def forget(self, version: str) -> None:
        """Drop `version`'s cached prefix (its rows' adapter is the version name; a full-weight version has a lane
        of its own). The model service calls it under the model lock when the version is unloaded, so a version
        reloaded under the same name never reuses keys and values of its old weights. No engine lock here: the engine
        thread, holding it, may wait for the model lock (a cancelled ticket releases its version), which the caller
        holds. Single dict operations suffice: the version has no request in flight, so no prefill reads its entry."""
        for lane, cache in list(self._prefixes.items()):
            if lane.endswith(f":{version}"):
                self._prefixes.pop(lane, None)
            else:
                cache.pop(version, None)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not any(lane.batch.rows or lane.prefills
                                                    for lane in self._lanes.values()):
                    self._wake.wait()
                self._admit_waiting()
            for key, lane in list(self._lanes.items()):
                if not (lane.batch.rows or lane.prefills):
                    del self._lanes[key]  # idle: a reloaded version gets a fresh lane with its new model
                    continue
                try:
                    self._turn(lane)
                except Exception as err:  # a failed forward pass fails that lane's requests, not the engine
                    log.exception("decode lane %s", key)
                    for ticket in [*lane.tickets.values(), *lane.joining()]:
                        self._finish(ticket, err)
                    del self._lanes[key]

    def _admit_waiting(self) -> None:
        """Drop cancelled tickets; start prefills of the waiting tickets that have room in their lane (chats first).

        A prefill starts even while others are under way: a short prompt does not wait for a long one to finish
        (`_turn` runs the prefill with the fewest passes left first). Tickets needing the same number of passes
        prefill together, so no prompt is padded to a much longer one."""
        for lane in self._lanes.values():
            gone = [t for t in lane.tickets.values() if t.cancelled]
            if gone:
                lane.batch.drop([t.row for t in gone])
                for ticket in gone:
                    del lane.tickets[id(ticket.row)]
                    self._finish(ticket)
        for ticket in [t for t in self._waiting if t.cancelled]:
            self._waiting.remove(ticket)
            self._finish(ticket)
        starting: dict[tuple[str, int, int], list[Ticket]] = {}  # (lane, priority, passes) -> tickets
        for ticket in sorted(self._waiting, key=lambda t: (t.priority, t._order)):
            lane = self._lanes.get(ticket.route.lane)
            if lane is None:
                batch = Batch(ticket.route.forward, self._stops, self._pad, self.guard, self.prefix,
                              self._prefixes.setdefault(ticket.route.lane, {}))
                lane = self._lanes[ticket.route.lane] = _Lane(batch)
            starting_here = sum(len(g) for (key, _, _), g in starting.items() if key == ticket.route.lane)
            room = self.max_batch - len(lane.batch.rows) - len(lane.joining()) - starting_here
            if room > (self.reserved if ticket.priority == JOB else 0):
                passes = -(-len(ticket.row.prompt_ids) // self.chunk)
                starting.setdefault((ticket.route.lane, ticket.priority, passes), []).append(ticket)
                self._waiting.remove(ticket)
        for (key, priority, passes), tickets in starting.items():
            lane = self._lanes[key]
            lane.prefills.append(_Prefill(tickets, lane.batch.admit([t.row for t in tickets], self.chunk),
                                          max(passes, 1), priority, tickets[0]._order))

    def _turn(self, lane: _Lane) -> None:
        """One prefill chunk (chats first, then the prefill with the fewest passes left), then one decode step of
        the running rows."""
        if lane.prefills:
            prefill = min(lane.prefills, key=lambda p: (p.priority, p.passes_left, p.order))
            next(prefill.passes, None)
            prefill.passes_left -= 1
            first = prefill.tickets[0].row
            if first.done or first.new_ids:  # the last chunk ran: the joining rows are in the batch
                lane.prefills.remove(prefill)
                for ticket in prefill.tickets:
                    ticket.first_token_s = time.perf_counter() - ticket.started
                    self._deliver(lane, ticket)
                return
        running = [lane.tickets[id(row)] for row in lane.batch.rows]
        if running:
            lane.batch.step()
            for ticket in running:
                self._deliver(lane, ticket)

    def _deliver(self, lane: _Lane, ticket: Ticket) -> None:
        if ticket.row.done:
            lane.tickets.pop(id(ticket.row), None)
            self._finish(ticket)
            return
        lane.tickets[id(ticket.row)] = ticket
        if ticket.stream:
            self._send(ticket)

    def _send(self, ticket: Ticket) -> None:
        ticket._sent = len(ticket.row.new_ids)
        ticket._out.put((self.tokenizer.decode(ticket.row.new_ids, skip_special_tokens=True), ticket.stats()))

    def _finish(self, ticket: Ticket, error: BaseException | None = None) -> None:
        if error is not None:
            ticket._out.put(error)
        elif not ticket.cancelled and (ticket._sent is None or ticket._sent < len(ticket.row.new_ids)):
            self._send(ticket)  # the last token (or the empty answer of a model that stopped at once)
        ticket._out.put(None)
        self.release(ticket.version)
