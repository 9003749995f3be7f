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
