"""anymail's webhook URLs, each view wrapped so a payload anymail cannot parse is answered 400.

anymail raises on unparsable bodies (invalid JSON, a non-JSON SNS message...) and Django turns
that into a 500, which ESPs retry; a bad payload will never parse, so say so with a 400. Errors
from our own receivers that are worth retrying (database errors) still become 500s.
"""

import functools
import logging

from anymail.exceptions import AnymailError
from anymail.urls import urlpatterns as anymail_patterns
from django.core.exceptions import SuspiciousOperation
from django.http import HttpResponseBadRequest
from django.urls import URLPattern

log = logging.getLogger(__name__)
UNPARSABLE = (ValueError, KeyError, TypeError, AttributeError, IndexError, UnicodeError, AnymailError)


def _never_500_on_bad_input(view):
    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except SuspiciousOperation:
            raise  # anymail's auth failures: Django answers 400 (and logs to django.security)
        except UNPARSABLE as err:
            log.warning("unparsable webhook payload at %s: %s", request.path, err)
            return HttpResponseBadRequest("unparsable payload")

    return wrapped


urlpatterns = [
    URLPattern(p.pattern, _never_500_on_bad_input(p.callback), p.default_args, p.name)
    for p in anymail_patterns
]
