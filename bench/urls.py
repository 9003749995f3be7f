"""URLs used while benchmarking: the product's own, plus the naive reference admin."""

from django.urls import path

from bench import naive_events
from bench.naive_admin import site
from config.urls import urlpatterns as product_urls

urlpatterns = [*product_urls, path("naive-admin/", site.urls), path("naive/v1/events", naive_events.events)]
