"""B2: event ingestion through a real WSGI server (PERFORMANCE.md section 5).

Workload: events over N contacts (full: 1M events / 100k contacts; small: 100k / 10k), 5 event
types, ~200 B of properties, 1% repeated idempotency keys, generated from a seed by
bench/loadgen.py, which runs as a separate process against gunicorn on 127.0.0.1 (3 sync workers,
as README's deployment line) serving this app on a throwaway database:
  batch     500 events per request, 4 connections;
  single    1 event per request, 16 connections (full: 20k requests, small: 5k).
References, same events, same database, in this process:
  (a) orm       Event bulk_create(batch_size=2000, ignore_conflicts=True) with contact ids resolved
                from an in-memory email → id map (the ORM limit);
  (a) physical  executemany (SQLite) / COPY (PostgreSQL);
and through its own gunicorn (same workers and threads), with the same load generator:
  (b) naive     bench/naive_events.py: per event get_or_create of the contact and of the event,
                events_ingested inside the request, CONN_MAX_AGE=0 (full: 20k events in batches
                and 5k single requests; small: 5k and 2k); vs_naive is ours / naive.
Correctness: rows stored = unique events exactly, for every HTTP run.
Targets: batch >= 15k events/s on SQLite, >= 10k on PostgreSQL (>= 50% of the ORM reference);
single >= 1,000 req/s on SQLite, >= 700 on PostgreSQL, p99 <= 100 ms.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.db import connection, transaction

from bench.ingest_common import Timer, bench_database, print_table, row
from bench.loadgen import events

SIZES = {"small": (100_000, 10_000, 5_000), "full": (1_000_000, 100_000, 20_000)}  # events, contacts, single reqs
NAIVE = {"small": (5_000, 2_000), "full": (20_000, 5_000)}  # naive reference: batch events, single requests
# README's deployment line (`gunicorn config.wsgi -w 3`): 3 sync workers. Measured against gthread 2x4
# (the earlier setting) on 60k batch events and 5k single events: 19.7k vs 17.0k events/s and 752 vs
# 712 req/s; a sync worker takes a new connection per request, so the busy worker never gets pinned
# keep-alive connections while another idles (gthread put all 4 batch connections on one of 4 workers).
WORKERS, THREADS, WORKER_CLASS = 3, 1, "sync"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_contacts(n: int) -> dict[str, int]:
    from segments.models import Contact

    with transaction.atomic():
        Contact.objects.bulk_create([Contact(email=f"c{i}@example.com", source="seed") for i in range(n)],
                                    batch_size=2000)
    return dict(Contact.objects.values_list("email", "id"))


def _clear_events() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE segments_event" if connection.vendor == "postgresql" else "DELETE FROM segments_event")


def _unique_events(n: int, contacts: int, seed: int, prefix: str, chunk: int = 10_000):
    """The unique events in chunks (1M event dicts at once would take about a gigabyte)."""
    out = []
    for e, dup in events(n, contacts, seed, prefix):
        if not dup:
            out.append(e)
            if len(out) == chunk:
                yield out
                out = []
    if out:
        yield out


def _orm_reference(chunks, ids: dict[str, int]) -> int:
    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    from segments.models import Event

    now, n = timezone.now(), 0
    with transaction.atomic():
        for evs in chunks:
            Event.objects.bulk_create(
                [Event(contact_id=ids[e["email"]], type=e["type"], properties=e["properties"],
                       occurred_at=parse_datetime(e["occurred_at"]), received_at=now, source="api",
                       idempotency_key=e["idempotency_key"]) for e in evs],
                batch_size=2000, ignore_conflicts=True)
            n += len(evs)
    return n


def _physical_reference(chunks, ids: dict[str, int]) -> int:
    from django.utils import timezone

    now = connection.ops.adapt_datetimefield_value(timezone.now())
    cols = ("contact_id", "anonymous_id", "type", "properties", "occurred_at", "received_at", "source",
            "idempotency_key")
    n = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for evs in chunks:
            if connection.vendor == "postgresql":
                with cursor.cursor.copy(f"COPY segments_event ({', '.join(cols)}) FROM STDIN") as copy:
                    for e in evs:
                        copy.write_row((ids[e["email"]], "", e["type"], json.dumps(e["properties"]), e["occurred_at"],
                                        now, "api", e["idempotency_key"]))
            else:
                cursor.executemany(
                    f"INSERT INTO segments_event ({', '.join(cols)}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(ids[e["email"]], "", e["type"], json.dumps(e["properties"]), e["occurred_at"].replace("Z", ""),
                      now, "api", e["idempotency_key"]) for e in evs])
            n += len(evs)
    return n


def _start_server(db_url: str, port: int, app: str = "config.wsgi:application", **extra_env: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": db_url, "ALLOW_INSECURE_SECRET": "true", "DEBUG": "false",
           "LOG_LEVEL": "ERROR", "INGEST_MAX_BODY_BYTES": str(4 * 1024 * 1024), **extra_env}
    env.pop("PYTEST_VERSION", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
         "--workers", str(WORKERS), "--worker-class", WORKER_CLASS, "--threads", str(THREADS), "--keep-alive", "30",
         "--log-level", "warning", "--timeout", "120"],
        cwd=settings.BASE_DIR, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("gunicorn did not come up")


def _stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _load(port: int, key: str, mode: str, n: int, contacts: int, concurrency: int, prefix: str,
          path: str = "/api/v1/events") -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{port}{path}", "--key", key,
         "--mode", mode, "--events", str(n), "--contacts", str(contacts), "--concurrency", str(concurrency),
         "--batch", "500", "--seed", "2", "--prefix", prefix],
        cwd=settings.BASE_DIR, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run(*, size: str, db: str) -> list[dict]:
    from segments.models import ApiKey, Event

    n_events, n_contacts, n_single = SIZES[size]
    rows: list[dict] = []
    with bench_database("b2", db) as url:
        ids = _seed_contacts(n_contacts)
        _key, raw = ApiKey.issue(name="bench")
        # The references include generating the events (as the load generator does), so time that
        # alone too and take it out: what remains is the database work.
        with Timer() as t_gen:
            for _chunk in _unique_events(n_events, n_contacts, 2, "ev"):
                pass
        with Timer() as t_orm:
            n_ref = _orm_reference(_unique_events(n_events, n_contacts, 2, "ev"), ids)
        orm_ok = Event.objects.count() == n_ref
        _clear_events()
        with Timer() as t_phys:
            _physical_reference(_unique_events(n_events, n_contacts, 2, "ev"), ids)
        phys_ok = Event.objects.count() == n_ref
        _clear_events()

        # (b) naive, first (on the emptier table, the kinder order for it): its own gunicorn, same workers.
        n_naive, n_naive_single = NAIVE[size]
        port = _free_port()
        server = _start_server(url, port, "bench.naive_wsgi:application", CONN_MAX_AGE="0")
        try:
            naive_batch = _load(port, raw, "batch", n_naive, n_contacts, 4, "nv", path="/naive/v1/events")
            stored_naive_batch = Event.objects.filter(source="naive").count()
            naive_single = _load(port, raw, "single", n_naive_single, n_contacts, 16, "nvone", path="/naive/v1/events")
            stored_naive_single = Event.objects.filter(source="naive").count() - stored_naive_batch
        finally:
            _stop_server(server)

        port = _free_port()
        server = _start_server(url, port)
        try:
            batch = _load(port, raw, "batch", n_events, n_contacts, 4, "ev")
            stored_batch = Event.objects.filter(source="api").count()
            single = _load(port, raw, "single", n_single, n_contacts, 16, "one")
            stored_single = Event.objects.filter(source="api").count() - stored_batch
        finally:
            _stop_server(server)

    unique = batch["unique"]
    orm_seconds, phys_seconds = t_orm.seconds - t_gen.seconds, t_phys.seconds - t_gen.seconds
    orm_rate = unique / orm_seconds
    batch_ok = stored_batch == unique == batch["accepted"] and batch["errors"] == 0
    single_ok = stored_single == single["unique"] == single["accepted"] and single["errors"] == 0
    naive_batch_rate = naive_batch["events"] / naive_batch["seconds"]
    naive_single_rate = naive_single["requests"] / naive_single["seconds"]
    naive_batch_ok = (stored_naive_batch == naive_batch["unique"] == naive_batch["accepted"]
                      and naive_batch["errors"] == 0)
    naive_single_ok = (stored_naive_single == naive_single["unique"] == naive_single["accepted"]
                       and naive_single["errors"] == 0)
    rows.append(row("B2", "ours: batch endpoint (500/request)", db, batch["events"], batch["seconds"], batch_ok,
                    orm_rate, stored=stored_batch, unique=unique, duplicates=batch["duplicates"],
                    requests=batch["requests"], p50_ms=batch["p50_ms"], p99_ms=batch["p99_ms"],
                    vs_naive=round(batch["events"] / batch["seconds"] / naive_batch_rate, 1)))
    rows.append(row("B2", "ours: single-event endpoint (req/s)", db, single["requests"], single["seconds"],
                    single_ok, stored=stored_single, unique=single["unique"], p50_ms=single["p50_ms"],
                    p99_ms=single["p99_ms"], concurrency=16,
                    vs_naive=round(single["requests"] / single["seconds"] / naive_single_rate, 1)))
    rows.append(row("B2", "(b) naive view: batch (500/request)", db, naive_batch["events"], naive_batch["seconds"],
                    naive_batch_ok, stored=stored_naive_batch, unique=naive_batch["unique"],
                    p50_ms=naive_batch["p50_ms"], p99_ms=naive_batch["p99_ms"]))
    rows.append(row("B2", "(b) naive view: single (req/s)", db, naive_single["requests"], naive_single["seconds"],
                    naive_single_ok, stored=stored_naive_single, unique=naive_single["unique"],
                    p50_ms=naive_single["p50_ms"], p99_ms=naive_single["p99_ms"], concurrency=16))
    rows.append(row("B2", "(a) orm: bulk_create", db, unique, orm_seconds, orm_ok,
                    generation_seconds_excluded=round(t_gen.seconds, 2)))
    rows.append(row("B2", "(a) physical: " + ("COPY" if db == "pg" else "executemany"), db, unique,
                    phys_seconds, phys_ok))
    print_table(rows)
    return rows

