"""Work on the chunks of a file in a child process while this one writes to the database.

An import is two halves that need different things: parsing (CSV, cell clean-up, email and
phone validation) is pure Python on the file alone; writing (lookups, diff, consent rules, SQL)
needs this process's database connection and transaction. A read-ahead thread cannot overlap
them (both halves hold the GIL; measured slower), a child process can: parse_ahead() forks one
that runs `work` on each item and streams the results back through a pipe, in order, while this
process handles the previous one. The child never touches the database.

Also tried and left out: a writer thread committing chunk N on its own connection while this
thread prepared chunk N+1 (its lookups resolving chunk N's contacts from memory; same results
row for row). On the 2-core box it was no faster (B1 PostgreSQL, 100k rows, the same run:
10.7k rows/s against 11.0k inline) and cost 0.8 CPU-seconds more here: with this child busy on
the second core, the parent and the server were already sharing one core, and the two threads
mostly traded the GIL (branch b1pg2, commit 1d59cf5, has the code).

What comes back is exactly what `work` returned, in the items' order. An exception raised in
the child (a file that is not UTF-8 halfway down) is raised here at the same place in the
stream; a child that dies (killed, out of memory) or stops sending is reported as
ParserStopped, never waited for forever. Memory stays bounded: the child blocks when the pipe
holds about one result that this process has not taken yet.
"""

import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from segments import collector

T = TypeVar("T")
R = TypeVar("R")

# Seconds without a result before the child counts as stuck. A 2,000-row chunk takes ~0.1 s to
# parse; this only bounds the wait for a child that can no longer send.
STALL_SECONDS = 300


class ParserStopped(RuntimeError):
    """The parsing child process died or stopped sending: the import cannot go on."""


def available() -> bool:
    """Forking is how the child gets the parser's state (the layout, the open file) for free."""
    return "fork" in multiprocessing.get_all_start_methods()


def _child(work: Callable, items: Iterable, conn) -> None:
    try:
        for item in items:
            conn.send(("item", work(item)))
        conn.send(("done", None))
    except BaseException as exc:  # noqa: BLE001 (everything goes back to the parent, which raises it)
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 (an exception that cannot travel: its text does)
            exc = ParserStopped("".join(traceback.format_exception(exc)))
        try:
            conn.send(("error", exc))
        except OSError:
            pass  # the parent has gone (it stopped reading): nobody to tell
    finally:
        conn.close()


def _loads(message: bytes):
    """Unpickle with the cyclic collector paused: unpickling makes tens of thousands of containers
    in a burst, all alive, and every collection they trigger meanwhile walks them again (measured:
    the parent spent 1.3 of its 1.7 CPU-seconds receiving 100k parsed rows in the collector).
    Unpickled objects form no garbage while they are being made; the collector sees them after."""
    with collector.paused():
        return pickle.loads(message)  # noqa: S301 (our own forked child, over a private pipe)


def parse_ahead(work: Callable[[T], R], items: Iterable[T], *, stall_seconds: float = STALL_SECONDS) -> Iterator[R]:
    """work(item) for each item, computed in a forked child one item ahead of the consumer.

    `items` is consumed in the child only: the caller must not use it (nor the file under it)
    afterwards. Closing the generator early (the consumer failed) stops the child.

    A plain os.fork(), not multiprocessing.Process: django-q2 runs its workers as daemonic
    processes, which multiprocessing forbids to have children, and background imports are the
    ones that need the speed. A child whose parent died (a worker killed at its timeout) finds
    the pipe closed at its next send and exits: it is never left behind for long.
    """
    receiver, sender = multiprocessing.get_context("fork").Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: parse, send, and leave without running the parent's exit handlers
        code = 0
        try:
            receiver.close()
            _child(work, items, sender)
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    sender.close()  # the child holds the only writing end: its exit ends the stream (EOFError)
    exit_code = None
    try:
        while True:
            if not receiver.poll(stall_seconds):
                raise ParserStopped(f"the parser process sent nothing for {stall_seconds} s")
            try:
                message = receiver.recv_bytes()
            except EOFError:
                exit_code = _reap(pid, wait=5)
                raise ParserStopped(f"the parser process stopped unexpectedly (exit code {exit_code})") from None
            kind, payload = _loads(message)
            if kind == "item":
                yield payload
            elif kind == "done":
                return
            else:
                raise payload
    finally:
        receiver.close()
        if exit_code is None and _reap(pid, wait=0) is None:
            _stop(pid)


def _reap(pid: int, *, wait: float) -> int | None:
    """The child's exit code once it has exited (waiting up to `wait` seconds), else None."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return -1  # already reaped
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _stop(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        if _reap(pid, wait=wait) is not None:
            return
