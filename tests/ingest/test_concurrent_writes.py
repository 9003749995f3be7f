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


@pytest.mark.django_db(transaction=True)
def test_sqlite_log_is_checkpointed_after_writes_outside_the_writer_turn(settings):
    """The per-process checkpointer copies committed pages back, so the log does not wait for SQLite's own
    checkpoint (which runs inside a writer's turn and makes every other writer wait for it)."""
    from django.db import connection

    from segments.ingest import locks

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    settings.SQLITE_BACKGROUND_CHECKPOINTS = True
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    runs = locks._checkpointer.runs
    store_events([Event(type="searched", source="api", idempotency_key=f"c{i}") for i in range(300)])

    def copied_back() -> bool:
        # A run still pending from an earlier test's write may come first and find the log empty; the
        # one this write woke follows within the thread's interval.
        last = locks._checkpointer.last
        return locks._checkpointer.runs > runs and last is not None and last[1] > 0

    for _ in range(200):  # allow a few seconds on a busy machine
        if copied_back():
            break
        threading.Event().wait(0.05)
    assert copied_back()
    _busy, frames, copied = locks._checkpointer.last
    assert copied == frames  # the 300 rows' pages, all copied back by the thread
    assert Event.objects.filter(source="api").count() == 300
