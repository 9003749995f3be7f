import select
import time

from django.db import connection
from django.utils import timezone

_cache: dict = {"shop": None, "at": 0.0}
CACHE_SECONDS = 30


def current_shop():
    """The Shop row, cached for a few seconds so pages and rows cost no extra query."""
    if _cache["shop"] is None or time.monotonic() - _cache["at"] > CACHE_SECONDS:
        from segments.models import Shop

        _cache["shop"] = Shop.load()
        _cache["at"] = time.monotonic()
    return _cache["shop"]


def forget_shop() -> None:
    _cache["shop"] = None


class ShopTimezoneMiddleware:
    """Every datetime is stored in UTC and shown in the shop's own zone."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        timezone.activate(current_shop().zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


class MachineEndpointMiddleware:
    """The events API answers programs, not people: it skips the middleware made for pages.

    Sessions, locale, the shop's time zone, CSRF (the API authenticates by key, and is csrf_exempt),
    users, messages and X-Frame-Options do nothing for a JSON POST authenticated by an API key, but
    cost ~0.1 ms of a single-event request's ~1.5 ms (benchmark B2). Placed right after
    SecurityMiddleware, so HTTPS redirects and security headers still apply; errors still become
    Django's 500 response (every middleware is wrapped by the handler's exception conversion). The
    per-request database health check becomes a look at the socket (skip_idle_health_check).
    """

    def __init__(self, get_response):
        from segments.ingest import api

        self.get_response = get_response
        self.views = {"/api/v1/events": api.events}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        if view is None:
            return self.get_response(request)
        skip_idle_health_check()
        return view(request)


def skip_idle_health_check() -> bool:
    """Replace this request's health check (CONN_HEALTH_CHECKS: a `SELECT 1` round trip before the first
    query of every request) by a look at the connection's socket; True when it was skipped.

    An idle PostgreSQL connection has nothing to read. When the server ends it (a restart, an idle
    timeout, pg_terminate_backend) it sends an error and closes the socket, which then polls readable;
    so does anything else unexpected. Only then is the check left to run, and Django reconnects. The
    round trip was a third of a single-event request's wall time on PostgreSQL (benchmark B2).
    What no poll can see, a peer gone silently, the `SELECT 1` would not have seen in time either
    (it would wait as the first query does).
    """
    if (connection.vendor != "postgresql" or connection.connection is None or connection.health_check_done
            or not connection.health_check_enabled or connection.in_atomic_block):
        return False
    from psycopg.pq import TransactionStatus

    raw, IDLE = connection.connection, TransactionStatus.IDLE  # noqa: N806
    try:
        if raw.closed or raw.broken or raw.info.transaction_status != IDLE:
            return False
        if select.select([raw.fileno()], [], [], 0)[0]:
            return False
    except (OSError, ValueError):
        return False
    connection.health_check_done = True
    return True
