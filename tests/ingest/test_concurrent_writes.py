"""Concurrent event writers: every unique key stored once, no 'database is locked', no deadlock."""

import threading

import pytest
from django.db import connections

from segments.ingest.services import store_events
from segments.models import Event


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_with_overlapping_keys_store_each_key_once():
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(40):
                # Overlapping keys across threads, in different orders, like retried batches.
                keys = [f"k{(offset * 7 + i + j) % 60}" for j in range(5)]
                store_events([Event(type="searched", source="api", idempotency_key=k) for k in keys])
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Event.objects.filter(source="api").count() == 60
    assert Event.objects.values("idempotency_key").distinct().count() == 60
