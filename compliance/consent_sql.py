"""Set-based reads and writes of Consent and ConsentEvent rows for compliance.consent.

Below the ORM on purpose, like segments.ingest.sql: an import states consent for tens of
thousands of people, and building, preparing and compiling a model instance per row cost more
than the rules themselves (bulk_create alone took half of an import's time). The values are
already checked by compliance.consent; identifiers come from the models' metadata.
"""

import json
from collections.abc import Iterator

from django.db import connection

from compliance.models import Consent, ConsentEvent, Suppression
from segments import pgarrays

EVENT_FIELDS = ("contact", "channel", "status", "previous_status", "source", "accepted", "note", "consent_text",
                "consent_text_sha256", "ip", "user_agent", "actor", "proof", "occurred_at", "recorded_at")
ROWS_PER_STATEMENT = 1000


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _chunks(values: list, size: int) -> Iterator[list]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _cursor():
    """A cursor for the statements below: on PostgreSQL their lists go as arrays (segments.pgarrays.array),
    one parameter each, which costs a fraction of quoting 2,000 values into the SQL."""
    return pgarrays.cursor() if _pg() else connection.cursor()


def when(value):
    """A datetime as the database takes it (SQLite: text in UTC)."""
    return connection.ops.adapt_datetimefield_value(value)


def _iso(value):
    """An aware datetime as text PostgreSQL's COPY reads back exactly (ISO 8601 with its offset)."""
    return value.isoformat() if value.tzinfo is not None else when(value)


def lock_rows(contact_ids: list[int], channels: list[str]) -> dict[tuple[int, str], list]:
    """{(contact, channel): [id, status]} of the existing Consent rows, locked (PostgreSQL: FOR UPDATE)."""
    found: dict[tuple[int, str], list] = {}
    table = _q(Consent._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    marks = ", ".join(["%s"] * len(channels))
    for chunk in _chunks(sorted(contact_ids), 5000 if _pg() else 900):
        where, params = _ids_in("contact_id", chunk, "bigint")
        with _cursor() as cursor:
            cursor.execute(f"SELECT id, contact_id, channel, status FROM {table} "  # noqa: S608 (model names)
                           f"WHERE {where} AND channel IN ({marks}) ORDER BY id{lock}", [*params, *channels])
            for pk, cid, channel, status in cursor.fetchall():
                found[(cid, channel)] = [pk, status]
    return found


def _ids_in(column: str, chunk: list, sql_type: str) -> tuple[str, list]:
    """`column IN (...)`; on PostgreSQL `= ANY(array)` (segments.pgarrays.array), of the column's own type
    (sql_type): `bigint = ANY(smallint[])` would not be matched to the index on the column."""
    if _pg():
        placeholder, param = pgarrays.array(chunk, sql_type)
        return f"{column} = ANY({placeholder})", [param]
    return f"{column} IN ({', '.join(['%s'] * len(chunk))})", list(chunk)


def stated_keys(contact_ids: list[int]) -> list[tuple]:
    """(contact, channel, proof["key"]) of the logged statements of these contacts that have a key."""
    table = _q(ConsentEvent._meta.db_table)
    key = "proof ->> 'key'" if _pg() else "json_extract(proof, '$.\"key\"')"
    found = []
    for chunk in _chunks(contact_ids, 5000 if _pg() else 900):
        where, params = _ids_in("contact_id", chunk, "bigint")
        with _cursor() as cursor:
            cursor.execute(f"SELECT contact_id, channel, {key} FROM {table} "  # noqa: S608 (model names)
                           f"WHERE {where} AND {key} IS NOT NULL", params)
            found += cursor.fetchall()
    return found


def active_suppressions(hashes: list[str]) -> list[tuple]:
    """(id, channel, address_hash, reason) of the active suppressions of these address hashes."""
    table = _q(Suppression._meta.db_table)
    found = []
    for chunk in _chunks(hashes, 5000 if _pg() else 900):
        where, params = _ids_in("address_hash", chunk, "text")
        with _cursor() as cursor:
            cursor.execute(f"SELECT id, channel, address_hash, reason FROM {table} "  # noqa: S608 (model names)
                           f"WHERE {where} AND lifted_at IS NULL", params)
            found += cursor.fetchall()
    return found


def _unnest(rows: list[tuple], types: tuple[str, ...]) -> tuple[str, list]:
    """`unnest(array, ...)` of the rows' columns, one array parameter per column (PostgreSQL)."""
    arrays = [pgarrays.array(list(column), t) for column, t in zip(zip(*rows, strict=True), types, strict=True)]
    return f"unnest({', '.join(a for a, _p in arrays)})", [p for _a, p in arrays]


CONSENT_ROW_TYPES = ("bigint", "text", "text", "text", "timestamptz")


def insert_rows(rows: list[tuple]) -> int:
    """New Consent rows (contact, channel, status, source, changed_at); a row another writer created
    meanwhile is left alone (ON CONFLICT DO NOTHING). Returns how many were inserted."""
    table = _q(Consent._meta.db_table)
    columns = "contact_id, channel, status, source, changed_at"
    times: dict = {}  # a few distinct times, each converted once (PostgreSQL: ISO text, see pgarrays.array)
    as_time = _iso if _pg() else when
    rows = [(cid, ch, status, source, times[at] if at in times else times.setdefault(at, as_time(at)))
            for cid, ch, status, source, at in rows]
    if not _pg():
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s) "  # noqa: S608
                               "ON CONFLICT DO NOTHING", rows)
            return cursor.rowcount  # the rows inserted, not those left alone
    inserted = 0
    with _cursor() as cursor:
        for chunk in _chunks(rows, ROWS_PER_STATEMENT):  # arrays: one parameter per column, not per value
            unnest, params = _unnest(chunk, CONSENT_ROW_TYPES)
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT * FROM {unnest} "  # noqa: S608 (model names)
                           "ON CONFLICT DO NOTHING RETURNING id", params)
            inserted += len(cursor.fetchall())
    return inserted


def update_rows(rows: list[tuple]) -> None:
    """Move existing Consent rows: (id, status, source, changed_at)."""
    table = _q(Consent._meta.db_table)
    if not _pg():
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET status = %s, source = %s, changed_at = %s "  # noqa: S608
                               "WHERE id = %s", [(s, src, when(at), pk) for pk, s, src, at in rows])
        return
    times: dict = {}
    rows = [(pk, s, src, times[at] if at in times else times.setdefault(at, _iso(at))) for pk, s, src, at in rows]
    with _cursor() as cursor:
        for chunk in _chunks(rows, ROWS_PER_STATEMENT):
            unnest, params = _unnest(chunk, ("bigint", "text", "text", "timestamptz"))
            cursor.execute(f"UPDATE {table} AS t SET status = v.status, source = v.source, "  # noqa: S608
                           f"changed_at = v.changed_at FROM {unnest} AS v(id, status, source, changed_at) "
                           "WHERE t.id = v.id", params)


def insert_events(events: list[tuple], *, returning: bool = True) -> list[int]:
    """ConsentEvent rows as tuples in EVENT_FIELDS order; returns their ids, in order (returning=False:
    nothing, and PostgreSQL takes them by COPY, SQLite by executemany)."""
    table = _q(ConsentEvent._meta.db_table)
    columns = ", ".join(_q(ConsentEvent._meta.get_field(f).column) for f in EVENT_FIELDS)
    proof, occurred, recorded = (EVENT_FIELDS.index(f) for f in ("proof", "occurred_at", "recorded_at"))
    times: dict = {}  # an import's rows share a few consent times and one recording time
    # COPY (PostgreSQL, no ids wanted) takes the times as ISO text: psycopg's dumping a datetime for
    # COPY costs about as much as the rest of the row, and here each distinct time is converted once.
    copying = not returning and _pg()
    as_time = _iso if copying else when

    def row(e) -> list:
        r = list(e)
        r[proof] = json.dumps(r[proof])
        for i in (occurred, recorded):
            t = r[i]
            r[i] = times[t] if t in times else times.setdefault(t, as_time(t))
        return r

    if not returning:
        with connection.cursor() as cursor:
            if copying:
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for e in events:
                        copy.write_row(row(e))
            else:
                cursor.executemany(f"INSERT INTO {table} ({columns}) "  # noqa: S608 (model names)
                                   f"VALUES ({', '.join(['%s'] * len(EVENT_FIELDS))})", [row(e) for e in events])
        return []
    marks = ["%s"] * len(EVENT_FIELDS)
    if _pg():
        marks[proof] = "%s::jsonb"
        marks[EVENT_FIELDS.index("ip")] = "%s::inet"
    one = "(" + ", ".join(marks) + ")"
    ids: list[int] = []
    for chunk in _chunks(events, ROWS_PER_STATEMENT):
        params = [v for e in chunk for v in row(e)]
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(chunk))} "  # noqa: S608
                           "RETURNING id", params)
            ids += [r[0] for r in cursor.fetchall()]
    return ids
