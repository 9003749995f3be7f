"""Plain-value INSERTs for hot write paths, below the ORM on purpose.

`bulk_create(..., ignore_conflicts=True)` builds a model instance per row and compiles every
value through the query compiler: for the gate's send log and the `email_sent` events written
after every group of sent messages that was most of the ledger's write cost (B4). This writes
the same rows with the same conflict handling (INSERT OR IGNORE on SQLite, ON CONFLICT DO
NOTHING on PostgreSQL, as Django's bulk_create does) in one statement per chunk. Values go
through each field's get_db_prep_save (datetimes, JSON); columns not given get the model
field's default, computed once per call.
"""

from django.db import connection
from django.db.models.constants import OnConflict

CHUNK_PARAMS = 900  # under SQLite's historical 999-parameter limit


def field_default(field):
    """What the ORM would store for a field the row does not give: its default, else NULL or ''."""
    if field.has_default():
        return field.get_default()
    if field.null:
        return None
    return "" if field.empty_strings_allowed else None


def insert_ignoring_conflicts(model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT these rows (values in `columns` order, by field name), skipping any that conflict."""
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in columns]
    rest = [f for f in model._meta.concrete_fields if not f.primary_key and f.name not in columns]
    tail = [field.get_db_prep_save(field_default(field), connection) for field in rest]
    all_fields = [*fields, *rest]
    q = connection.ops.quote_name
    head = (f"{connection.ops.insert_statement(on_conflict=OnConflict.IGNORE)} {q(model._meta.db_table)} "
            f"({', '.join(q(f.column) for f in all_fields)}) VALUES ")
    suffix = connection.ops.on_conflict_suffix_sql(all_fields, OnConflict.IGNORE, None, None)
    marks = "(" + ", ".join(["%s"] * len(all_fields)) + ")"
    prepared = [[f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)] + tail for row in rows]
    per_chunk = max(1, CHUNK_PARAMS // len(all_fields))
    with connection.cursor() as cursor:
        for i in range(0, len(prepared), per_chunk):
            chunk = prepared[i:i + per_chunk]
            # Names come from the model's metadata; values are parameters.
            cursor.execute(head + ", ".join([marks] * len(chunk)) + (f" {suffix}" if suffix else ""),  # noqa: S608
                           [v for row in chunk for v in row])
