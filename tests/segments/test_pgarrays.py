"""segments.pgarrays.array(): every list comes back from PostgreSQL exactly as it was sent."""

import pytest
from django.db import connection

from segments import pgarrays

CASES = [
    ([1, 2, 3_000_000_000], "bigint"),
    (["mei@example.com", "+60123456789", "", "ünïcode@例え.jp"], "text"),
    (["a\x1fb", "c"], "text"),  # holds the separator: goes as a binary array
    ([""], "text"),  # would split into an empty array
    (["x", None], "text"),  # a NULL
    ([7, None], "bigint"),
    ([], "bigint"),
    (["2026-11-23T03:00:00+00:00", "2026-11-23T11:00:00+08:00"], "timestamptz"),
]


def test_array_round_trips(db):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    for values, sql_type in CASES:
        placeholder, param = pgarrays.array(values, sql_type)
        with pgarrays.cursor() as cursor:
            cursor.execute(f"SELECT {placeholder}::text[]", [param])
            (got,) = cursor.fetchone()
            cursor.execute(f"SELECT %b::{sql_type}[]::text[]", [values])
            (expected,) = cursor.fetchone()
        assert got == expected, values
        assert len(got) == len(values)


def test_keys_go_as_one_text_parameter_and_odd_lists_as_binary_arrays():
    assert pgarrays.array(["a", "b"], "text") == ("string_to_array(%s, E'\\x1f')::text[]", "a\x1fb")
    assert pgarrays.array([1, 2], "bigint") == ("string_to_array(%s, E'\\x1f')::bigint[]", "1\x1f2")
    for odd in (["a\x1fb", "c"], [""], ["x", None], [1, None], []):
        assert pgarrays.array(odd, "text") == ("%b::text[]", odd)
