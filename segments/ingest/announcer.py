"""events_ingested for the web endpoints, coalesced: one signal per short window, not one per request.

Why: the receivers (segment membership, workflow triggers) cost about the same for one event as for a
few hundred, and run inside the request that stored them. For single-event requests the segment update
was more than half of the request (benchmark B2), and grows with every segment defined. Here the events
API and the storefront tracker hand the ids of what they committed to a per-process thread, which
waits INGEST_ANNOUNCE_SECONDS (default 0.25 s) for more and sends one events_ingested for all of them:
the request answers as soon as its events are stored, the receivers run a few times a second per web
process whatever the request rate, and an event still reaches them well within a second.

0 sends inline, after commit, as before (the tests do; tasks and imports always do). A process that
exits cleanly (gunicorn's graceful stop, a new deploy) announces what it still holds first. A process
that is killed loses only the announcement: the events are stored, and the scheduled full segment
refresh picks them up.
"""

import atexit
import logging
import os
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections

from segments.models import Event
from segments.signals import events_ingested

log = logging.getLogger(__name__)
MAX_IDS = 5000  # per signal; more waiting ids go out in several signals of this size


class Announcer:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[bool, list[int]] = {}  # trigger_flows -> ids, in arrival order
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._sending = threading.Lock()

    def add(self, ids: list[int], *, trigger_flows: bool) -> None:
        """Queue ids that are committed; the thread announces them within the window."""
        with self._cond:
            if self._pid != os.getpid():
                self._pending = {}  # a forked child inherits the object, not the parent's thread or ids
                self._thread, self._pid = None, os.getpid()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="events-announcer", daemon=True)
                self._thread.start()
            self._pending.setdefault(trigger_flows, []).extend(ids)
            self._cond.notify()

    def flush(self) -> None:
        """Announce everything waiting, now, in the calling thread (until nothing is left)."""
        with self._sending:
            while batch := self._take():
                self._send(*batch)

    def _flush_window(self) -> None:
        """Announce what is waiting now, once: ids that arrive meanwhile wait for the next window.

        Draining until empty (as flush does) kept the thread sending back to back under load: every
        send lets a few more requests finish, so the receivers ran once per ~3 requests instead of
        once per window (B2 on PostgreSQL: ~7 ms of receiver work per send, 40% of the worker's CPU).
        """
        with self._cond:
            waiting, self._pending = self._pending, {}
        with self._sending:
            for flag, ids in waiting.items():
                for start in range(0, len(ids), MAX_IDS):
                    try:
                        self._send(ids[start:start + MAX_IDS], flag)
                    except Exception:  # a database hiccup drops these ids only, as flush() would
                        log.exception("announcing ingested events failed")

    def stop(self) -> None:
        """End the thread (it closes its database connection) and announce what is left: at exit, in tests."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        with self._cond:
            self._thread, self._stopping = None, False
        self.flush()

    def _take(self) -> tuple[list[int], bool] | None:
        with self._cond:
            for flag, ids in self._pending.items():
                if ids:
                    batch, self._pending[flag] = ids[:MAX_IDS], ids[MAX_IDS:]
                    return batch, flag
        return None

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or any(self._pending.values()))
                    if self._stopping:
                        return
                # Let the window fill: one signal for every request answered meanwhile.
                time.sleep(settings.INGEST_ANNOUNCE_SECONDS)
                try:
                    self._flush_window()
                except Exception:  # the thread must outlive a database hiccup; those ids are dropped
                    log.exception("announcing ingested events failed")
        finally:
            connections.close_all()

    @staticmethod
    def _send(ids: list[int], trigger_flows: bool) -> None:
        close_old_connections()  # this thread's own connection: dropped when broken or too old
        for receiver, result in events_ingested.send_robust(sender=Event, event_ids=ids, trigger_flows=trigger_flows):
            if isinstance(result, Exception):
                log.error("events_ingested receiver %r failed for %d events", receiver, len(ids),
                          exc_info=(type(result), result, result.__traceback__))


announcer = Announcer()
atexit.register(announcer.stop)


def announce(ids: list[int], *, trigger_flows: bool) -> None:
    """Send events_ingested for committed ids: coalesced when INGEST_ANNOUNCE_SECONDS > 0, else now."""
    if settings.INGEST_ANNOUNCE_SECONDS > 0:
        announcer.add(ids, trigger_flows=trigger_flows)
    else:
        events_ingested.send(sender=Event, event_ids=list(ids), trigger_flows=trigger_flows)
