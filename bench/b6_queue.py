"""B6: django-q2 overhead per shipped deployment profile, against the known-bad PostgreSQL setting.

Profiles: SQLite + ORM broker, PostgreSQL + ORM broker, PostgreSQL + Redis broker (all as
shipped, CONN_MAX_AGE=600 on PostgreSQL), and the reference PostgreSQL + ORM broker with
CONN_MAX_AGE=0 (measured at 37 tasks/s in shared/PERFORMANCE.md). Each profile: enqueue no-op
tasks through one shared broker (enqueue/s), then a real 2-worker `qcluster` drains them
(processed/s from the first task started to the last task stopped), then batch tasks that
insert 100 rows each. Correctness: every task ran exactly once (result rows = tasks, rows
written = 100 x batch tasks).
"""

import json
import os
import subprocess
import sys
import time
import uuid

from bench.framework import ROOT, bench_env, database_url, fresh_database, row

SIZES = {"small": (2_000, 200), "full": (10_000, 1_000)}
REDIS_URL = os.getenv("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def noop() -> None:
    return None


def insert_batch(tag: str) -> int:
    from segments.models import Event

    Event.objects.bulk_create([Event(type="bench_batch", source=tag[:32]) for _ in range(100)])
    return 100


def profiles() -> list[tuple[str, str, dict, float]]:
    """(name, db kind, extra env, share of the task count)."""
    return [
        ("sqlite+orm", "sqlite", {}, 1.0),
        ("pg+orm", "pg", {}, 1.0),
        ("pg+redis", "pg", {"Q_BROKER_URL": REDIS_URL}, 1.0),
        ("pg+orm CONN_MAX_AGE=0 (bad)", "pg", {"CONN_MAX_AGE": "0"}, 0.1),
    ]


def run(*, size: str, db: str) -> list[dict]:
    n_noop, n_batch = SIZES[size]
    results = {}
    rows = []
    for name, kind, extra, share in profiles():
        url = database_url(kind, "b6_profile")
        fresh_database(url)
        env = bench_env(url, Q_SAVE_LIMIT="0", Q_WORKERS="2", Q_NAME=f"b6-{uuid.uuid4().hex[:6]}", **extra)
        args = [sys.executable, "manage.py", "bench_queue_profile", "--noop", str(max(200, int(n_noop * share))),
                "--batch", str(max(20, int(n_batch * share)))]
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"profile {name} failed:\n{proc.stderr[-4000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = results["pg+orm CONN_MAX_AGE=0 (bad)"]
    for name, r in results.items():
        is_bad = "bad" in name
        common = {"enqueue_per_s": round(r["enqueue_rate"], 1), "profile": name}
        rows.append(row("b6", f"{name}: no-op tasks", name.split("+")[0], r["noop"], r["noop_seconds"],
                        reference=None if is_bad else bad["noop"] / bad["noop_seconds"],
                        ok=r["noop_ok"], **common))
        rows.append(row("b6", f"{name}: 100-row batch tasks", name.split("+")[0], r["batch"], r["batch_seconds"],
                        reference=None if is_bad else bad["batch"] / bad["batch_seconds"], ok=r["batch_ok"],
                        rows_written=r["rows_written"], **common))
    return rows


def measure_profile(n_noop: int, n_batch: int) -> dict:
    """Runs inside a process configured for one profile (see bench_queue_profile)."""
    from django.db import connection
    from django_q.brokers import get_broker
    from django_q.models import Success
    from django_q.tasks import async_task

    from segments.models import Event

    broker = get_broker()
    broker.purge_queue()
    start = time.perf_counter()
    for _ in range(n_noop):
        async_task("bench.b6_queue.noop", broker=broker, group="noop")
    enqueue_rate = n_noop / (time.perf_counter() - start)
    tag = f"b6-{uuid.uuid4().hex[:8]}"
    for _ in range(n_batch):
        async_task("bench.b6_queue.insert_batch", tag, broker=broker, group="batch")
    connection.close()

    env = {**os.environ}
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900
        while Success.objects.count() < n_noop + n_batch and time.monotonic() < deadline:
            if cluster.poll() is not None:
                raise RuntimeError("qcluster exited")
            time.sleep(0.5)
    finally:
        cluster.terminate()
        cluster.wait(timeout=60)

    def span(group: str) -> tuple[int, float]:
        qs = Success.objects.filter(group=group)
        times = list(qs.values_list("started", "stopped"))
        first = min(t[0] for t in times)
        last = max(t[1] for t in times)
        return len(times), (last - first).total_seconds()

    done_noop, noop_seconds = span("noop")
    done_batch, batch_seconds = span("batch")
    rows_written = Event.objects.filter(type="bench_batch", source=tag[:32]).count()
    return {
        "noop": n_noop, "batch": n_batch, "enqueue_rate": enqueue_rate,
        "noop_seconds": noop_seconds, "batch_seconds": batch_seconds,
        "noop_ok": done_noop == n_noop, "batch_ok": done_batch == n_batch and rows_written == 100 * n_batch,
        "rows_written": rows_written,
    }
