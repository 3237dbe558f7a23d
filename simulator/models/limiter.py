"""One limit on the requests in flight to an endpoint, which comes down when the endpoint throttles and recovers."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass


@dataclass
class Ticket:
    """One request's place in the limiter: the window it was sent under, and how it went."""

    epoch: int
    throttled: bool = False
    ok: bool = False


class Limiter:
    """At most `most` requests in flight, every role and judge counted; the window halves when the endpoint answers
    429 and grows back by one per `most` successes (additive increase, multiplicative decrease).

    A window halves at most once for the requests sent under it, so a burst of 429s to one window counts once. The
    increase is slower than TCP's one per window: at a window of 1 that would probe with every other request.
    Waiters are served first come, first served, each handed its slot when one frees (no herd of wake-ups).
    """

    def __init__(self, most: int):
        self.most = most
        self.window = float(most)
        self.in_flight = 0
        self.epoch = 0
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    async def enter(self) -> Ticket:
        """Wait for room in the window. The caller marks the ticket `throttled` (a 429) or `ok`, then calls `leave`."""
        if self._waiting or self.in_flight >= int(self.window):
            handed = asyncio.get_running_loop().create_future()
            self._waiting.append(handed)
            try:
                await handed  # `_hand_on` counted this request in flight before handing it the slot
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._hand_on()
                raise
        else:
            self.in_flight += 1
        return Ticket(self.epoch)

    def leave(self, ticket: Ticket) -> None:
        """The request is over: adjust the window by how it went, and hand its slot on."""
        if ticket.throttled and ticket.epoch == self.epoch:
            self.window, self.epoch = max(1.0, self.window / 2), self.epoch + 1
        elif ticket.ok:
            self.window = min(float(self.most), self.window + 1 / self.most)
        self._hand_on()

    def _hand_on(self) -> None:
        self.in_flight -= 1
        while self._waiting and self.in_flight < int(self.window):
            handed = self._waiting.popleft()
            if not handed.done():  # a waiter cancelled meanwhile is skipped
                self.in_flight += 1
                handed.set_result(None)
