"""WSGI application for B2's naive reference: the product's URLs plus bench/naive_events.py's view."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("CONN_MAX_AGE", "0")

from django.conf import settings  # noqa: E402 (after the environment it reads)

settings.ROOT_URLCONF = "bench.urls"
application = get_wsgi_application()
