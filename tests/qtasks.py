"""Tasks the cluster tests enqueue (importable by the qcluster subprocess)."""

import time

from django.db import transaction

from segments.models import Event


def read_then_write(tag: str) -> int:
    """The shape that fails on SQLite without IMMEDIATE transactions: read, pause, write."""
    with transaction.atomic():
        seen = Event.objects.filter(type="probe", source=tag).count()
        time.sleep(0.02)
        Event.objects.create(type="probe", source=tag, properties={"seen": seen})
    return seen
