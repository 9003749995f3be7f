"""Streaming readers: a CSV file (UTF-8 with or without BOM, CRLF, quoted newlines) or a tablib Dataset."""

import csv
import io
from collections.abc import Iterator
from typing import BinaryIO

from segments.ingest.formats import normalize_header

# Notes fields in real exports can be long; csv's default 128 KB limit is kept deliberately.


def _text(stream: BinaryIO) -> io.TextIOBase:
    # utf-8-sig drops a BOM when there is one; newline="" lets csv handle CRLF and quoted newlines.
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="", errors="strict")


def open_csv(stream: BinaryIO) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The header and an iterator of (line number where the record starts, {lower-case column: cell})."""
    reader = csv.reader(_text(stream))
    try:
        header = normalize_header(next(reader))
    except StopIteration:
        return [], iter(())
    except UnicodeDecodeError as exc:
        raise ValueError(f"The file is not UTF-8 text ({exc.reason}). Save it as 'CSV UTF-8'.") from None
    keys = [h.lower() for h in header]

    def rows() -> Iterator[tuple[int, dict]]:
        start = reader.line_num + 1
        try:
            for record in reader:
                if any(c.strip() for c in record):
                    yield start, dict(zip(keys, record, strict=False))
                start = reader.line_num + 1
        except UnicodeDecodeError as exc:
            raise ValueError(f"The file is not UTF-8 text near line {start} ({exc.reason}).") from None

    return header, rows()


def count_records(path) -> int:
    """Data records in a CSV file (quoted newlines counted once), for the progress bar."""
    with open(path, "rb") as f:
        reader = csv.reader(_text(f))
        return max(0, sum(1 for _ in reader) - 1)


def open_dataset(dataset) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """Same shape from a tablib Dataset (the admin's import-export upload, CSV or XLSX)."""
    header = normalize_header(dataset.headers or [])
    keys = [h.lower() for h in header]

    def rows() -> Iterator[tuple[int, dict]]:
        for i, record in enumerate(dataset, start=2):
            values = ["" if v is None else str(v) for v in record]
            if any(v.strip() for v in values):
                yield i, dict(zip(keys, values, strict=False))

    return header, rows()

