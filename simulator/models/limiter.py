"""One limit on the requests in flight to an endpoint, which comes down when the endpoint throttles and recovers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
    """

    def __init__(self, most: int):
        self.most = most
        self.window = float(most)
        self.in_flight = 0
        self.epoch = 0
        self._turn = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        """Wait for room in the window; the caller marks the ticket `throttled` (a 429) or `ok` before leaving."""
        async with self._turn:
            await self._turn.wait_for(lambda: self.in_flight < int(self.window))
            self.in_flight += 1
            ticket = Ticket(self.epoch)
        try:
            yield ticket
        finally:
            async with self._turn:
                self.in_flight -= 1
                if ticket.throttled and ticket.epoch == self.epoch:
                    self.window, self.epoch = max(1.0, self.window / 2), self.epoch + 1
                elif ticket.ok:
                    self.window = min(float(self.most), self.window + 1 / self.most)
                self._turn.notify_all()
