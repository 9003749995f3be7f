"""django-q2 with a real cluster: the ORM broker (default) and the Redis broker (grown-up mode)."""

import os
import uuid

import pytest
import redis
from django.db import connection
from django_q.conf import Conf
from django_q.models import Failure, Success
from django_q.tasks import async_task

from segments.models import Event
from tests.qcluster import running_cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]
REDIS_URL = os.getenv("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")
N = 150


def _enqueue(tag: str, n: int) -> None:
    for _ in range(n):
        async_task("tests.qtasks.read_then_write", tag)


def test_concurrent_read_then_write_tasks_all_succeed_on_the_orm_broker():
    """4 workers at once on one database: with the shipped SQLite settings none hits 'database is locked'."""
    tag = f"orm-{uuid.uuid4().hex[:8]}"
    _enqueue(tag, N)
    with running_cluster(workers=4) as proc:
        assert wait_for(lambda: Event.objects.filter(type="probe", source=tag).count() >= N, timeout=120, proc=proc)
        assert wait_for(lambda: Success.objects.filter(func="tests.qtasks.read_then_write").count() >= min(N, 250),
                        timeout=30)
    assert Event.objects.filter(type="probe", source=tag).count() == N  # nothing lost, nothing twice
    assert not Failure.objects.exists()
    if connection.vendor == "sqlite":
        # Every write saw a different count: IMMEDIATE transactions really were serialised.
        seen = sorted(Event.objects.filter(type="probe", source=tag).values_list("properties__seen", flat=True))
        assert seen == list(range(N))


def test_tasks_run_through_the_redis_broker(monkeypatch):
    name = f"shop-redis-{uuid.uuid4().hex[:8]}"
    client = redis.from_url(REDIS_URL)
    client.ping()
    # Enqueue exactly as a web process configured with Q_BROKER_URL=redis://... would.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", REDIS_URL)
    monkeypatch.setattr(Conf, "PREFIX", name)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", name)
    tag = f"redis-{uuid.uuid4().hex[:8]}"
    _enqueue(tag, 60)
    assert client.llen(f"django_q:{name}:q") == 60
    with running_cluster(workers=2, extra_env={"Q_BROKER_URL": REDIS_URL, "Q_NAME": name}) as proc:
        assert wait_for(lambda: Event.objects.filter(type="probe", source=tag).count() >= 60, timeout=90, proc=proc)
    assert Event.objects.filter(type="probe", source=tag).count() == 60
    assert client.llen(f"django_q:{name}:q") == 0
    client.delete(f"django_q:{name}:q")
