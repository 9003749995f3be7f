"""Run an import's chunk transactions in a thread of their own, one at a time, in order.

Why: on PostgreSQL a chunk's statements keep the server busy for about as long as this process
spends preparing the chunk in Python (B1: ~4.4 and ~5.5 CPU-seconds for 100k rows), and done one
after the other they add up. psycopg releases the GIL while it waits for the server, so a thread
that commits chunk N lets the importer prepare chunk N+1 meanwhile. The thread has its own
database connection (Django's are per thread), hence its own transactions: each chunk is still
exactly one transaction, committed in the chunks' order. At most one chunk is in flight: submit()
first waits for the previous one, so the importer knows that every chunk before it is committed
(segments.ingest.importer resolves the one in flight from memory).

A chunk that fails raises its error in the importer's thread at the next submit() or at close();
nothing after it is written, as when the chunks were written inline.
"""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection


def _close_connection() -> None:
    """Close the calling thread's connection (run in the writer: `connection` is per thread)."""
    connection.close()


class ChunkWriter:
    """One writer thread; `after` callbacks (the import's progress) run here once their chunk is committed."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer")
        self._pending: Future | None = None
        self._after: Callable[[], None] | None = None

    def submit(self, work: Callable[[], None], *, after: Callable[[], None] | None = None) -> None:
        """Run `work` in the writer once the previous chunk is committed; `after` once it has run."""
        self.wait()
        self._pending, self._after = self._pool.submit(work), after

    def wait(self) -> None:
        """Wait for the chunk in flight; raise its error here, or run its `after`."""
        pending, after, self._pending, self._after = self._pending, self._after, None, None
        if pending is not None:
            pending.result()
            if after is not None:
                after()

    def close(self, *, quiet: bool = False) -> None:
        """Wait for the last chunk (quiet: ignore its error, another one is on its way up) and end the thread."""
        try:
            if quiet:
                try:
                    self.wait()
                except Exception:  # noqa: BLE001, S110 (the caller is raising the error that stopped the import)
                    pass
            else:
                self.wait()
        finally:
            self._pool.submit(_close_connection).result()
            self._pool.shutdown()
