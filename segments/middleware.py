import time

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
    Django's 500 response (every middleware is wrapped by the handler's exception conversion).
    """

    def __init__(self, get_response):
        from segments.ingest import api

        self.get_response = get_response
        self.views = {"/api/v1/events": api.events}

    def __call__(self, request):
        view = self.views.get(request.path_info)
        return view(request) if view is not None else self.get_response(request)
