"""A sending rate shared by all workers: slots reserved on one database row per channel.

The provider decides how fast we may go (SES: a per-second sending rate per account; Twilio: about
one SMS a second per long code). A per-worker sleep would multiply with the number of workers (the
listmonk bug, PEERS.md), so the limit lives in channels.SendRateLimit and every worker reserves
hand-over times on it: one short transaction moves the row's `next_slot` forward by k / rate and
gives this worker the k slots before it; the worker then waits for each slot just before handing
the message over. Two workers interleave their blocks, so together they keep to the rate whatever
their number. A block is about half a second of sending, so the row is written a few times a second
at most, and a slot left unused (a worker that died, a message the gate refused meanwhile) is only
a slot lost: the rate can fall short of the limit, never exceed it.

Reservations commit before any waiting: no transaction is held while sleeping (SQLite has one writer).
"""

import math
import time
from collections import deque
from collections.abc import Callable

from django.conf import settings
from django.db import transaction

from channels.models import SendRateLimit

BLOCK_SECONDS = 0.5  # slots reserved per database round trip: this much sending time


def rate_for(channel: str) -> float | None:
    """Messages per second allowed on the channel, or None for no limit."""
    row = SendRateLimit.objects.filter(channel=channel).values_list("per_second", flat=True).first()
    if row is not None:
        return row
    default = settings.CHANNELS["RATE_LIMITS"].get(channel)
    if not default:
        return None
    return SendRateLimit.objects.get_or_create(channel=channel, defaults={"per_second": float(default)})[0].per_second


def batch_size(channel: str, size: int) -> int:
    """Messages per delivery task under the limit: about 30 s of sending, so a task ends well within
    the cluster's timeout however slow the rate (and workers take turns instead of one hogging it)."""
    rate = rate_for(channel)
    return size if rate is None else max(1, min(size, int(rate * 30)))


class Pacer:
    """Waits before each hand-over so that this batch, with every other worker's, keeps to the rate."""

    def __init__(self, channel: str, total: int, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None):
        self.channel, self.remaining = channel, total
        self.clock, self.sleep = clock or time.time, sleep or time.sleep
        self.rate = rate_for(channel) if total else None
        self.slots: deque[float] = deque()

    def wait(self, n: int = 1) -> None:
        """Block until n more messages may go (returns at once without a limit)."""
        if self.rate is None:
            return
        last = None
        for _ in range(n):
            if not self.slots:
                self._reserve(max(1, min(max(self.remaining, 1), math.ceil(self.rate * BLOCK_SECONDS))))
            last = self.slots.popleft()
            self.remaining -= 1
        delay = last - self.clock()
        if delay > 0:
            self.sleep(delay)

    def paced(self, hand_over: Callable[[list], list[bool]]) -> Callable[[list], list[bool]]:
        """hand_over (channels.ledger), called only once the slots for its messages have come."""
        if self.rate is None:
            return hand_over

        def wrapped(items: list) -> list[bool]:
            self.wait(len(items))
            return hand_over(items)

        return wrapped

    def _reserve(self, k: int) -> None:
        with transaction.atomic():
            row = SendRateLimit.objects.select_for_update().filter(channel=self.channel).first()
            if row is None:  # removed meanwhile: no limit any more
                self.rate = None
                self.slots.extend([0.0] * k)
                return
            self.rate = row.per_second
            start = max(row.next_slot, self.clock())
            row.next_slot = start + k / self.rate
            row.save(update_fields=["next_slot"])
        self.slots.extend(start + i / self.rate for i in range(k))
