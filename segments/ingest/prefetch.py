"""Produce the next chunk of an import while the current one is written.

Reading and parsing a chunk of a CSV file is pure Python; writing the previous chunk spends a
good part of its time in the database driver with the GIL released (SQLite's C code, the wait
for PostgreSQL's answer). A producer thread one chunk ahead fills those waits. It only reads
and parses: no database access, no shared state (the consumer applies what it returns, in order).
"""

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def prefetched(items: Iterator[T], *, ahead: int = 1) -> Iterator[T]:
    """The items of `items`, in order, produced by a background thread at most `ahead` in advance.

    An exception in the producer is raised here; stopping early (the consumer failed) stops it.
    """
    box: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                box.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            put(("error", exc))

    thread = threading.Thread(target=produce, name="import-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join(timeout=5)
