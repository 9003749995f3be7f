"""B1: contact CSV import (PERFORMANCE.md section 5).

Workload: a 12-column contact CSV in our template layout (email, names, E.164 phone, country,
locale, email/SMS consent, consent time, 3 custom properties): 100k rows (full) / 10k (small),
of which 10% update contacts already in the database, 2% repeat a person earlier in the file
(other case, other spaces) and 1% are invalid (bad email, no phone). Generated with a seeded
random.Random, so every run imports the same file.

Measured in the same run, on the same file and the same starting database:
  ours      `import_contacts` code path (segments.ingest.importer.import_file), file → committed
            rows → error report written.
  orm       reference (b): csv.DictReader + Contact bulk_create(batch_size=1000) of the same rows,
            already de-duplicated and valid (no lookups, no validation, no report).
  physical  reference (a): the same rows via executemany (SQLite) / COPY (PostgreSQL).
  naive     reference (c): django-import-export's default ModelResource, import_id_fields=email,
            on a sample, extrapolated as a rate.
Targets: ours >= 10k rows/s, >= 40% of orm, >= 8x naive, peak RSS <= 250 MB.
"""

import csv
import json
import os
import random
import resource
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

from bench.ingest_common import Timer, bench_database, peak_rss_mb, print_table, row

SIZES = {"small": 10_000, "full": 100_000}
NAIVE_SAMPLE = {"small": 2_000, "full": 5_000}
HEADER = ["email", "first_name", "last_name", "phone", "country", "locale", "email_consent", "sms_consent",
          "consent_at", "loyalty_tier", "shoe_size", "favourite_category"]
FIRST = ["Aiko", "Ben", "Chen", "Dewi", "Emre", "Farah", "Gita", "Hana", "Ivan", "Jun", "Kai", "Lina", "Mei", "Nur"]
LAST = ["Tan", "Lee", "Wong", "Lim", "Ng", "Rahman", "Sato", "Kim", "Singh", "Ong", "Goh", "Chua", "Ito", "Abdullah"]


def _person(rng: random.Random, i: int) -> list[str]:
    return [f"user{i}@example.com", rng.choice(FIRST), rng.choice(LAST), f"+6012{i:07d}", "MY",
            rng.choice(["en", "ms", "ja"]), rng.choice(["yes", "no", ""]), rng.choice(["yes", "no", ""]),
            f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z", rng.choice(["gold", "silver", "bronze"]),
            str(rng.randint(36, 46)), rng.choice(["kitchen", "garden", "books", "toys"])]


def generate(path: Path, n: int, seed: int = 1) -> dict:
    """Write the file; returns what a correct import must produce."""
    rng = random.Random(seed)
    n_update, n_dup, n_bad = n // 10, n // 50, n // 100
    n_unique = n - n_dup - n_bad
    existing = list(range(n_update))  # people 0..n_update-1 already exist in the database
    dup_slots = set(rng.sample(range(n_unique // 2, n), n_dup + n_bad))
    bad_slots = set(rng.sample(sorted(dup_slots), n_bad))
    person = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for slot in range(n):
            if slot in bad_slots:
                w.writerow([f"not-an-email-{slot}", "Bad", "Row", "", "MY", "", "", "", "", "", "", ""])
            elif slot in dup_slots:
                again = rng.randrange(person)
                cells = _person(rng, again)
                cells[0] = f"  USER{again}@Example.com "
                w.writerow(cells)
            else:
                w.writerow(_person(rng, person))
                person += 1
    return {"rows": n, "unique": person, "existing": existing, "invalid": n_bad, "duplicates": n_dup}


def _reset(existing: list[int]) -> None:
    from segments.models import Contact, ContactIdentifier, Tag

    with transaction.atomic():
        ContactIdentifier.objects.all().delete()
        Contact.tags.through.objects.all().delete()
        Tag.objects.all().delete()
        Contact.objects.all().delete()
        Contact.objects.bulk_create([Contact(email=f"user{i}@example.com", first_name="Old", source="seed")
                                     for i in existing], batch_size=1000)


def _clean_rows(path: Path) -> list[dict]:
    """The valid, de-duplicated rows as the references insert them."""
    seen, out = set(), []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            email = r["email"].strip().lower()
            if "@" not in email or email in seen:
                continue
            seen.add(email)
            out.append({**r, "email": email})
    return out


def _orm_reference(rows: list[dict]) -> None:
    from segments.models import Contact

    with transaction.atomic():
        Contact.objects.bulk_create([
            Contact(email=r["email"], first_name=r["first_name"], last_name=r["last_name"], phone=r["phone"] or None,
                    country=r["country"], locale=r["locale"], source="import",
                    properties={k: r[k] for k in ("loyalty_tier", "shoe_size", "favourite_category")})
            for r in rows], batch_size=1000)


def _physical_reference(rows: list[dict]) -> None:
    cols = ("email", "first_name", "last_name", "phone", "country", "locale", "timezone", "properties", "source",
            "orders_count", "total_spent", "average_order_value", "created_at", "updated_at")
    from django.utils import timezone

    now = timezone.now()
    values = [(r["email"], r["first_name"], r["last_name"], r["phone"] or None, r["country"], r["locale"], "",
               json.dumps({k: r[k] for k in ("loyalty_tier", "shoe_size", "favourite_category")}), "import", 0, 0, 0,
               now, now) for r in rows]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY segments_contact ({', '.join(cols)}) FROM STDIN") as copy:
                for v in values:
                    copy.write_row(v)
        else:
            marks = ", ".join(["%s"] * len(cols))
            cursor.executemany(f"INSERT INTO segments_contact ({', '.join(cols)}) VALUES ({marks})", values)


def _naive_reference(path: Path, sample: int) -> Timer:
    """import-export's default ModelResource (per-row lookup, diff, save) on the first rows."""
    import tablib
    from import_export import resources

    from segments.models import Contact

    class NaiveContactResource(resources.ModelResource):
        class Meta:
            model = Contact
            import_id_fields = ("email",)
            fields = ("email", "first_name", "last_name", "phone", "country", "locale")

    with open(path, encoding="utf-8") as f:
        lines = [next(f) for _ in range(sample + 1)]
    data = tablib.Dataset().load("".join(lines), format="csv")
    data.headers = [h.strip() for h in data.headers]
    with Timer() as t:
        NaiveContactResource().import_data(data, dry_run=False, raise_errors=False)
    return t


def run(*, size: str, db: str) -> list[dict]:
    from segments.ingest.importer import ImportOptions, import_file
    from segments.models import Contact

    n = SIZES[size]
    rows: list[dict] = []
    with bench_database("b1", db):
        path = Path(settings.VAR_DIR) / f"bench-b1-{size}.csv"
        expected = generate(path, n)
        _reset(expected["existing"])
        rss_before = peak_rss_mb()
        children0 = os.times()
        with Timer() as t:
            summary = import_file(path, kind="contacts", options=ImportOptions(actor="bench"))
            summary.write_report(path.with_suffix(".errors.csv"))
        children1 = os.times()
        # The importer may parse in a child process (segments/ingest/pipeline.py): its CPU and memory count too.
        child_cpu = (children1.children_user + children1.children_system
                     - children0.children_user - children0.children_system)
        stored = Contact.objects.count()
        updated_ok = Contact.objects.filter(email="user0@example.com").exclude(first_name="Old").exists()
        ok = (stored == expected["unique"] and summary.errors == expected["invalid"]
              and summary.created == expected["unique"] - len(expected["existing"]) and updated_ok)
        ours = dict(created=summary.created, updated=summary.updated, skipped=summary.skipped,
                    errors=summary.errors, peak_rss_mb=round(peak_rss_mb(), 1),
                    child_cpu_seconds=round(child_cpu, 2),
                    child_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                    rss_growth_mb=round(peak_rss_mb() - rss_before, 1), cpu_seconds=round(t.cpu, 2))

        clean = _clean_rows(path)
        _reset([])
        with Timer() as t_orm:
            _orm_reference(clean)
        orm_ok = Contact.objects.count() == len(clean)
        _reset([])
        with Timer() as t_phys:
            _physical_reference(clean)
        phys_ok = Contact.objects.count() == len(clean)
        _reset(expected["existing"])
        sample = NAIVE_SAMPLE[size]
        naive_seconds = _naive_reference(path, sample)

    orm_rate, naive_rate = len(clean) / t_orm.seconds, sample / naive_seconds.seconds
    # cpu_rate (rows per CPU-second of this process) is shown next to the wall-clock rate: on a
    # shared 2-core box the wall clock also measures the neighbours (see PERFORMANCE.md, top).
    rows.append(row("B1", "ours: import_contacts", db, n, t.seconds, ok, orm_rate, **ours,
                    cpu_rate=round(n / t.cpu), cpu_rate_with_child=round(n / (t.cpu + child_cpu)), vs_naive=round((n / t.seconds) / naive_rate, 1),
                    vs_physical=round((n / t.seconds) / (len(clean) / t_phys.seconds), 3),
                    cpu_ratio_to_orm=round((n / t.cpu) / (len(clean) / t_orm.cpu), 2),
                    cpu_vs_naive=round((n / t.cpu) / (sample / naive_seconds.cpu), 1)))
    rows.append(row("B1", "(b) orm: DictReader+bulk_create", db, len(clean), t_orm.seconds, orm_ok,
                    cpu_rate=round(len(clean) / t_orm.cpu)))
    rows.append(row("B1", "(a) physical: " + ("COPY" if db == "pg" else "executemany"), db, len(clean),
                    t_phys.seconds, phys_ok, cpu_rate=round(len(clean) / t_phys.cpu)))
    rows.append(row("B1", f"(c) naive: import-export default ({sample} rows)", db, sample, naive_seconds.seconds,
                    True, cpu_rate=round(sample / naive_seconds.cpu)))
    print_table(rows)
    return rows
