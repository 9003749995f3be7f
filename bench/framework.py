"""Benchmark plumbing shared by B1-B8: fresh databases, timing, result rows, the table, JSON lines.

Every benchmark measures our code and its reference side by side in the same run and checks
correctness; a benchmark module exposes `run(*, size: str, db: str) -> list[dict]` whose rows
carry at least {bench, variant, db, n, seconds, rate, ratio_to_reference, ok}.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
RESULTS = ROOT / "bench" / "results.jsonl"
PG_BASE = os.getenv("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")

BENCHMARKS = {
    "b1": "bench.b1_import",
    "b2": "bench.b2_events",
    "b3": "bench.b3_segments",
    "b4": "bench.b4_send",
    "b4t": "bench.b4_throttle",
    "b6": "bench.b6_queue",
    "b8": "bench.b8_admin",
}


def database_url(db: str, name: str) -> str:
    if db == "sqlite":
        return f"sqlite:///{ROOT / 'var' / f'bench-{name}.sqlite3'}"
    return f"{PG_BASE}/bench_{name}"


def fresh_database(url: str) -> None:
    """Drop and recreate the benchmark database, then migrate it (in a subprocess with that URL)."""
    if url.startswith("sqlite"):
        path = Path(url[len("sqlite:///"):])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        base, name = url.rsplit("/", 1)
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=bench_env(url), check=True)


def bench_env(url: str, **extra: str) -> dict:
    env = {**os.environ, "DATABASE_URL": url, "Q_LOG_LEVEL": "ERROR", **extra}
    env.pop("PYTEST_VERSION", None)
    return env


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    cpu = time.process_time()
    yield box
    box["seconds"] = time.perf_counter() - start
    box["cpu_seconds"] = time.process_time() - cpu


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def p95(samples: list[float]) -> float:
    if len(samples) < 2:
        return samples[0] if samples else 0.0
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def row(bench: str, variant: str, db: str, n: int, seconds: float, *, reference: float | None = None,
        ok: bool = True, higher_is_better: bool = True, **extra) -> dict:
    rate = n / seconds if seconds else 0.0
    ratio = None
    if reference:
        ratio = rate / reference if higher_is_better else reference / seconds if seconds else None
    return {"bench": bench, "variant": variant, "db": db, "n": n, "seconds": round(seconds, 4), "rate": round(rate, 1),
            "ratio_to_reference": round(ratio, 3) if ratio is not None else None, "ok": ok, **extra}


def report(rows: list[dict]) -> str:
    """Print a short table and append the rows as JSON lines to bench/results.jsonl."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with RESULTS.open("a") as fh:
        for r in rows:
            fh.write(json.dumps({"at": stamp, **r}, default=str) + "\n")
    cols = ["bench", "variant", "db", "n", "seconds", "rate", "ratio_to_reference", "ok"]
    extra = sorted({k for r in rows for k in r} - set(cols))
    cols += extra
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"
    return str(v)
