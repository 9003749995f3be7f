"""PostgreSQL statements whose parameters are long lists: a cursor and an array() placeholder for them.

Django's psycopg cursor binds parameters on the client (server_side_binding is off by default,
for connection poolers): a list is spelled out as an array literal inside the SQL, each element
quoted in Python, ~1.2 µs an address. An import chunk passes a dozen lists of 2,000 values
(emails, phones, ids, suppression hashes, consent rows), which cost more client CPU than the rest
of the chunk's queries (B1). Two ways out, both used through array():

- a list of keys (ids, emails, phones, hashes, vocabulary words, times) goes as ONE text
  parameter, the values joined by a separator none of them contains, split again on the server:
  `string_to_array(%s, sep)::bigint[]`. The join is one C call: 0.15 ms of client CPU for 2,000
  emails, against 0.67 ms for a binary array, whose elements psycopg dumps one by one in Python;
- anything else (free text that may hold the separator, NULLs) goes as a binary array, a `%b`
  placeholder, which needs this module's cursor(): it binds on the server, on the same connection
  and so in the same transaction, with Django's adapters and wrappers (database errors as
  Django's, queries logged under DEBUG). `%s` placeholders behave as usual there.

Nothing is prepared on the server (psycopg's prepare_threshold stays Django's None), so this
works behind a transaction-pooling connection pooler like every other query. PostgreSQL only.
"""

import psycopg
from django.db import connection

# ASCII "unit separator": not in any id, email (Django's validator refuses control characters),
# E.164 number, hash or ISO time; a value that holds one anyway sends its list as a binary array.
SEPARATOR = "\x1f"


def cursor():
    """A cursor (use it as a context manager) with server-side binding on Django's connection."""
    if connection.vendor != "postgresql":
        raise RuntimeError("pgarrays is for PostgreSQL only")
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(psycopg.Cursor(connection.connection))


def array(values: list, sql_type: str) -> tuple[str, object]:
    """(SQL placeholder, parameter) for `values` as a PostgreSQL array of `sql_type` (bigint, text...).

    Joined into one text parameter where that is exact (see the module docstring), else a `%b` binary
    array, which needs cursor(). Times go as text (ISO 8601 with the offset: cast to timestamptz).
    """
    joined = None
    if values and isinstance(values[0], str):
        try:
            joined = SEPARATOR.join(values)
        except TypeError:  # a NULL (None) among them
            pass
    elif values and None not in values:
        joined = SEPARATOR.join(map(str, values))
    # A value holding the separator shows up as one separator too many, and [""] would come back as an
    # empty array: those, NULLs and an empty list go as a binary array instead.
    if joined is None or joined.count(SEPARATOR) != len(values) - 1 or values == [""]:
        return f"%b::{sql_type}[]", values
    return f"string_to_array(%s, E'\\x1f')::{sql_type}[]", joined
