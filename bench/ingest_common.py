"""Helpers shared by the ingestion benchmarks B1 and B2 (a throwaway database, rows, a table)."""

import contextlib
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def bench_database(name: str, db: str) -> Iterator[str]:
    """Create a fresh, migrated database for the benchmark and drop it afterwards.

    It is Django's test-database machinery with the benchmark's own name, so a benchmark never
    touches the development database or a running test suite's. Yields a DATABASE_URL for it,
    for processes started by the benchmark (gunicorn in B2).
    """
    vendor = connection.vendor
    if (db == "pg") != (vendor == "postgresql"):
        raise SystemExit(f"--db {db} asked, but DATABASE_URL points to {vendor}. "
                         "Use DATABASE_URL=postgres://... for --db pg and no DATABASE_URL for sqlite.")
    test = settings.DATABASES["default"].setdefault("TEST", {})
    old_test_name = test.get("NAME")
    if vendor == "sqlite":
        test["NAME"] = str(Path(settings.VAR_DIR) / f"bench-{name}.sqlite3")
    else:
        test["NAME"] = f"bench_{name}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        s = settings.DATABASES["default"]
        if vendor == "sqlite":
            url = f"sqlite:///{s['NAME']}"
        else:
            auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
            url = f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
        yield url
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        if old_test_name is None:
            test.pop("NAME", None)
        else:
            test["NAME"] = old_test_name


class Timer:
    def __enter__(self):
        self.cpu0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0


def row(bench: str, variant: str, db: str, n: int, seconds: float, ok: bool, reference: float | None = None,
        **extra) -> dict:
    rate = n / seconds if seconds else 0.0
    return {"bench": bench, "variant": variant, "db": db, "n": n, "seconds": round(seconds, 3),
            "rate": round(rate, 1), "ratio_to_reference": round(rate / reference, 3) if reference else None,
            "ok": ok, **extra}


def print_table(rows: list[dict]) -> None:
    print(f"{'bench':<5} {'variant':<34} {'db':<6} {'n':>9} {'seconds':>9} {'rate/s':>10} {'ratio':>7} ok  extra")
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("bench", "variant", "db", "n", "seconds", "rate",
                                                          "ratio_to_reference", "ok")}
        ratio = "" if r["ratio_to_reference"] is None else f"{r['ratio_to_reference']:.2f}"
        print(f"{r['bench']:<5} {r['variant']:<34} {r['db']:<6} {r['n']:>9} {r['seconds']:>9.2f} {r['rate']:>10.0f} "
              f"{ratio:>7} {'yes' if r['ok'] else 'NO':<3} {extra if extra else ''}")
