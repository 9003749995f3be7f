"""Set-based reads and writes of contacts for the importer, below the ORM on purpose.

Why: through the ORM every phone number is parsed and validated again on assignment, on save
and on load (django-phonenumber-field), which alone capped an import near 3k rows/s here. The
importer has already validated and normalised every value, so it reads and writes plain
columns with executemany. Columns the importer does not set get the model field's default,
computed from the model itself: a column added to Contact later is filled correctly too.
"""

import functools
import json
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from django.db import connection, transaction

from segments import pgarrays
from segments.dbwrite import field_default
from segments.ingest.locks import sqlite_writer
from segments.models import Contact

READ_COLUMNS = ("id", "email", "phone", "first_name", "last_name", "country", "locale", "timezone", "properties")
WRITE_COLUMNS = ("email", "phone", "first_name", "last_name", "country", "locale", "timezone", "properties")
IN_CHUNK = 500  # SQLite allows 999 parameters per statement


def _chunks(values: list, size: int) -> Iterator[list]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _json_placeholder() -> str:
    return "%s::jsonb" if connection.vendor == "postgresql" else "%s"


def _in(column: str, chunk: list) -> tuple[str, list]:
    """`column IN (...)`; on PostgreSQL `= ANY(array)`, one parameter instead of thousands to plan
    (segments.pgarrays.array)."""
    if connection.vendor == "postgresql":
        placeholder, param = pgarrays.array(chunk, "text")
        return f"{_q(column)} = ANY({placeholder})", [param]
    return f"{_q(column)} IN ({', '.join(['%s'] * len(chunk))})", chunk


def _cursor():
    """A cursor for statements with list parameters (%b on PostgreSQL: see segments.pgarrays)."""
    return pgarrays.cursor() if connection.vendor == "postgresql" else connection.cursor()


def fetch(column: str, values: Iterable[str]) -> list[dict]:
    """Contacts whose `column` (email or phone) is one of the values, as plain dicts.

    Inside a transaction on PostgreSQL the rows found are locked FOR KEY SHARE until it ends: a
    contact erased meanwhile by another transaction would otherwise leave this one writing consent
    rows for a person who is gone, and fail at COMMIT on the foreign key (the whole chunk lost).
    The erasure waits for the chunk instead, and then removes what it wrote too. (SQLite: the
    import's transaction holds the database's write lock from its start.)
    """
    values = list(dict.fromkeys(v for v in values if v))
    out = []
    table = _q(Contact._meta.db_table)
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" and connection.in_atomic_block else ""
    for chunk in _chunks(values, 5000 if connection.vendor == "postgresql" else IN_CHUNK):
        where, params = _in(column, chunk)
        # Identifiers come from the model's metadata, never from input; values are parameters.
        sql = f"SELECT {', '.join(_q(c) for c in READ_COLUMNS)} FROM {table} WHERE {where}{lock}"  # noqa: S608
        with _cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for r in rows:
            d = dict(zip(READ_COLUMNS, r, strict=True))
            props = d["properties"]
            d["properties"] = json.loads(props) if isinstance(props, str) else (props or {})
            out.append(d)
    return out


def _defaults(now: datetime) -> dict:
    """Every other concrete column of Contact with its model default, ready for the database."""
    out = {}
    for field in Contact._meta.concrete_fields:
        if field.primary_key or field.column in WRITE_COLUMNS:
            continue
        value = now if field.name in ("created_at", "updated_at") else field_default(field)
        out[field.column] = field.get_db_prep_save(value, connection)
    return out


def _row(rec: dict) -> list:
    return [rec["email"], rec["phone"], rec["first_name"], rec["last_name"], rec["country"], rec["locale"],
            rec["timezone"], json.dumps(rec["properties"] or {})]


def insert(records: list[dict], *, now: datetime, source: str) -> None:
    """INSERT new contacts. On PostgreSQL their ids are drawn from the table's sequence first and
    set in each record (rec["id"]): no second query has to find them again by email or phone."""
    if not records:
        return
    extra = _defaults(now)
    extra["source"] = source
    columns = [*WRITE_COLUMNS, *extra]
    marks = ["%s"] * len(WRITE_COLUMNS) + ["%s"] * len(extra)
    marks[WRITE_COLUMNS.index("properties")] = _json_placeholder()
    sql = (f"INSERT INTO {_q(Contact._meta.db_table)} ({', '.join(_q(c) for c in columns)}) "  # noqa: S608
           f"VALUES ({', '.join(marks)})")
    tail = list(extra.values())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy_insert(cursor, records, columns, tail)
        else:
            cursor.executemany(sql, [_row(r) + tail for r in records])


def _copy_insert(cursor, records: list[dict], columns: list[str], tail: list) -> None:
    """PostgreSQL: COPY, its bulk path (PERFORMANCE.md 3.1: 183k rows/s vs ~25k for INSERTs), with
    ids taken from the sequence beforehand (nextval, as the column's own default would)."""
    table = Contact._meta.db_table
    cursor.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", [_id_sequence(cursor), len(records)])
    for rec, (pk,) in zip(records, cursor.fetchall(), strict=True):
        rec["id"] = pk
    tail = [copy_text(v) for v in tail]
    copy_sql = f"COPY {_q(table)} ({', '.join(_q(c) for c in ('id', *columns))}) FROM STDIN"
    with cursor.cursor.copy(copy_sql) as copy:
        for r in records:
            copy.write_row([r["id"], *_row(r), *tail])


_sequences: dict[tuple, str] = {}


def _id_sequence(cursor) -> str:
    """The contact id column's sequence, looked up once per database: pg_get_serial_sequence() inside
    the nextval() call is evaluated for every row (0.55 s for 87k ids instead of 0.04 s)."""
    key = (connection.alias, connection.settings_dict["NAME"])
    if key not in _sequences:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [_q(Contact._meta.db_table)])
        _sequences[key] = cursor.fetchone()[0]
    return _sequences[key]


def copy_text(value):
    """A datetime as COPY's text (ISO 8601 with its offset), anything else as it is.

    psycopg dumps a datetime for COPY at ~1.2 µs a value, a third of the cost of a whole contact
    row; the rows of one import share a handful of timestamps, so callers convert each once."""
    return value.isoformat() if isinstance(value, datetime) and value.tzinfo is not None else value


def import_transaction() -> None:
    """Called first in each import chunk's transaction: on PostgreSQL, commit without waiting for the
    flush, and read by index.

    SET LOCAL synchronous_commit = off for this transaction only. PostgreSQL's documentation
    (wal-async-commit): an asynchronous commit never risks consistency, only durability; a crash
    may lose the transactions committed in the last moments (at most 3 x wal_writer_delay, 0.6 s
    by default), each whole or not at all. For an import that is safe: each chunk's contacts,
    consent rows and their proof events are one transaction, so a lost chunk leaves no half-written
    person nor a consent without its proof, and importing the file again is idempotent (it writes
    exactly what is missing). An import's progress and summary come after its last commit, and a
    crash ends the import anyway.

    And SET LOCAL enable_seqscan = off: every read of an import chunk is by key (a chunk's emails,
    phones or contact ids, a few thousand at most), where an index probe per key costs O(k log n)
    and a full scan O(n). PostgreSQL's default cost model (random_page_cost 4, made for disks)
    still chose to scan all 100k contacts for 2,000 emails: 14 ms against 2.7 ms through the
    unique index, and the gap grows with the table (B1: ~1 s of a 100k-row import). A statement
    with no index to use still scans; only the choice between the two changes.
    Every other transaction keeps the server's settings.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off")


def update(records: list[dict], *, now: datetime) -> None:
    if not records:
        return
    stamp = Contact._meta.get_field("updated_at").get_db_prep_save(now, connection)
    if connection.vendor == "postgresql":
        _update_from_arrays(records, stamp)
        return
    sets = [f"{_q(c)} = %s" for c in WRITE_COLUMNS]
    sql = (f"UPDATE {_q(Contact._meta.db_table)} SET {', '.join(sets)}, {_q('updated_at')} = %s "  # noqa: S608
           f"WHERE {_q('id')} = %s")
    with connection.cursor() as cursor:
        cursor.executemany(sql, [_row(r) + [stamp, r["id"]] for r in records])


def _update_from_arrays(records: list[dict], stamp) -> None:
    """PostgreSQL: one UPDATE ... FROM unnest(arrays) per 1,000 rows instead of one statement per row;
    one array per column (segments.pgarrays.array), not nine parameters per row.

    The ids are also given as `t.id = ANY(ids)`: the rows to update are then found by the primary key
    whatever the planner believes about the table's size. With only the join, statistics still from
    before the import made it hash the whole table (read in full through the index, 2.5-4 ms of a
    10k-row table per statement, growing with it) to update 1,000 rows."""
    table = _q(Contact._meta.db_table)
    types = ["bigint", *("text" for _c in WRITE_COLUMNS)]
    sets = ", ".join(f"{_q(c)} = v.{_q(c)}::jsonb" if c == "properties" else f"{_q(c)} = v.{_q(c)}"
                     for c in WRITE_COLUMNS)
    names = ", ".join(_q(c) for c in ("id", *WRITE_COLUMNS))
    with pgarrays.cursor() as cursor:
        for chunk in _chunks(records, 1000):
            arrays = [pgarrays.array(list(c), t)
                      for c, t in zip(zip(*([r["id"], *_row(r)] for r in chunk), strict=True), types, strict=True)]
            sql = (f"UPDATE {table} AS t SET {sets}, {_q('updated_at')} = %s "  # noqa: S608 (names from the model)
                   f"FROM unnest({', '.join(a for a, _p in arrays)}) AS v({names}) WHERE t.{_q('id')} = v.{_q('id')} "
                   f"AND t.{_q('id')} = ANY({arrays[0][0]})")
            cursor.execute(sql, [stamp, *(p for _a, p in arrays), arrays[0][1]])


_max_params: dict[str, int] = {}


def max_params() -> int:
    """Bind parameters allowed per statement (SQLite's build limit, 32766 since 3.32; PostgreSQL 65535)."""
    vendor = connection.vendor
    if vendor not in _max_params:  # a property of the library, the same for every connection
        if vendor == "sqlite":
            import sqlite3

            connection.ensure_connection()
            _max_params[vendor] = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        else:
            _max_params[vendor] = 65535
    return _max_params[vendor]


@functools.cache
def _ids_by_sql(vendor: str, column: str, count: int) -> str:
    """SELECT column, id ... for `count` values (one array parameter on PostgreSQL)."""
    where = f'"{column}" = ANY(%s)' if vendor == "postgresql" else f'"{column}" IN ({", ".join(["%s"] * count)})'
    return f'SELECT "{column}", "id" FROM "{Contact._meta.db_table}" WHERE {where}'  # noqa: S608 (no input)


def ids_by(column: str, values: Iterable[str]) -> dict[str, int]:
    """{value: contact id} for contacts whose email or phone column holds one of the values."""
    values = list(dict.fromkeys(v for v in values if v))
    out: dict[str, int] = {}
    if not values:
        return out
    vendor = connection.vendor
    with connection.cursor() as cursor:
        for chunk in _chunks(values, max(IN_CHUNK, max_params() - 10)):
            cursor.execute(_ids_by_sql(vendor, column, 1 if vendor == "postgresql" else len(chunk)),
                           [chunk] if vendor == "postgresql" else chunk)
            out.update(cursor.fetchall())
    return out


EVENT_COLUMNS = ("contact_id", "anonymous_id", "type", "properties", "occurred_at", "received_at", "source",
                 "idempotency_key")


@functools.cache
def _insert_events_sql(vendor: str, rows: int) -> str:
    from segments.models import Event

    one = "(" + ", ".join("%s::jsonb" if c == "properties" and vendor == "postgresql" else "%s"
                          for c in EVENT_COLUMNS) + ")"
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    # Identifiers come from the model (double quotes on both backends), values are parameters.
    return (f'INSERT INTO "{Event._meta.db_table}" ({columns}) VALUES {", ".join([one] * rows)} '  # noqa: S608
            'ON CONFLICT DO NOTHING RETURNING "id"')


@functools.cache
def _known_email_event_sql() -> str:
    from segments.models import Event

    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    values = ", ".join("%s::jsonb" if c == "properties" else "%s" for c in EVENT_COLUMNS[1:])
    # Identifiers come from the models, values are parameters.
    return (f'WITH c AS (SELECT "id" FROM "{Contact._meta.db_table}" WHERE "email" = %s), '  # noqa: S608
            f'e AS (INSERT INTO "{Event._meta.db_table}" ({columns}) SELECT c."id", {values} FROM c '
            'ON CONFLICT DO NOTHING RETURNING "id") '
            'SELECT (SELECT "id" FROM c), (SELECT "id" FROM e)')


def insert_event_of_email(email: str, e) -> tuple[int | None, int | None]:
    """PostgreSQL: store one event for the contact with this (normalised) email, in one statement.

    Returns (contact id, event id): no contact id when nobody has the email (nothing was stored), no
    event id when its idempotency key is already stored (a duplicate). Atomic on its own, like
    insert_events' statements.
    """
    with connection.cursor() as cursor:
        cursor.execute(_known_email_event_sql(), [email, e.anonymous_id or "", e.type, json.dumps(e.properties or {}),
                                                  e.occurred_at, e.received_at, e.source, e.idempotency_key or ""])
        return cursor.fetchone()


_ZERO = timedelta(0)


def insert_events(events: list) -> list[int]:
    """Insert Event objects; a (source, idempotency key) already stored is skipped by the database.

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING id per chunk: the ids returned
    are exactly the rows stored now, so a retried delivery or a concurrent duplicate never
    stores twice and never raises. Each statement is atomic on its own. On PostgreSQL a batch
    outside a transaction goes through COPY instead (_copy_insert_events).
    """
    if not events:
        return []
    # Concurrent batches sharing idempotency keys must take their row locks in the same order, or
    # PostgreSQL detects a deadlock between two ON CONFLICT inserts (seen in benchmark B2).
    events = sorted(events, key=lambda e: (e.source, e.idempotency_key or ""))
    if connection.vendor == "postgresql" and len(events) >= COPY_MIN_ROWS and not connection.in_atomic_block:
        return _copy_insert_events(events)
    vendor, adapt = connection.vendor, connection.ops.adapt_datetimefield_value
    times: dict[datetime, object] = {}  # a batch shares received_at, and often occurred_at values
    utc_text = vendor == "sqlite" and connection.timezone_name == "UTC"

    def when(value: datetime):
        if value not in times:
            # SQLite stores UTC as text: a UTC value needs only its text (Django's adapter converts
            # time zones first, ~2.5 µs an event in B2); any other zone goes through Django's.
            if utc_text and value.utcoffset() == _ZERO:
                times[value] = str(value.replace(tzinfo=None))
            else:
                times[value] = adapt(value)
        return times[value]

    ids: list[int] = []
    per_statement = max(1, min(1000, max_params() // len(EVENT_COLUMNS)))
    dumps = json.dumps
    for chunk in _chunks(events, per_statement):
        params: list = []
        for e in chunk:
            params += [e.contact_id, e.anonymous_id or "", e.type, dumps(e.properties or {}), when(e.occurred_at),
                       when(e.received_at), e.source, e.idempotency_key or ""]
        with sqlite_writer(), connection.cursor() as cursor:
            cursor.execute(_insert_events_sql(vendor, len(chunk)), params)
            ids += [r[0] for r in cursor.fetchall()]
    return ids


# PostgreSQL, batches: COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO NOTHING
# RETURNING id. A multi-row VALUES statement of 500 events has 4,000 parameters, and psycopg splits and
# quotes such a statement in Python on every execution (~60 µs of client CPU per event, B2); COPY rows
# are encoded in C (~17 µs). The table lives as long as the database session and is emptied at every commit.
COPY_MIN_ROWS = 20  # below this the four round trips of COPY cost more than they save
_STAGE_DDL = ("CREATE TEMPORARY TABLE IF NOT EXISTS event_stage (contact_id bigint, anonymous_id text, type text, "
              "properties jsonb, occurred_at timestamptz, received_at timestamptz, source text, idempotency_key text) "
              "ON COMMIT DELETE ROWS")


def _copy_insert_events(events: list) -> list[int]:
    from segments.models import Event

    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    dumps = json.dumps
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        with cursor.cursor.copy(f"COPY event_stage ({columns}) FROM STDIN") as copy:
            for e in events:
                copy.write_row((e.contact_id, e.anonymous_id or "", e.type, dumps(e.properties or {}), e.occurred_at,
                                e.received_at, e.source, e.idempotency_key or ""))
        # ORDER BY: the same lock order as the VALUES path (see above).
        cursor.execute(f'INSERT INTO "{Event._meta.db_table}" ({columns}) '  # noqa: S608 (identifiers from the model)
                       f'SELECT {columns} FROM event_stage ORDER BY "source", "idempotency_key" '
                       'ON CONFLICT DO NOTHING RETURNING "id"')
        return [r[0] for r in cursor.fetchall()]
