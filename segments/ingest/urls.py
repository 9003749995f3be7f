from django.urls import path

from segments.ingest import api, openapi, tracker, webhooks

app_name = "ingest"

urlpatterns = [
    path("api/v1/events", api.events, name="events"),
    path("api/v1/openapi.json", openapi.schema, name="openapi"),
    path("webhooks/shopify/", webhooks.shopify, name="shopify-webhook"),
    path("webhooks/woocommerce/", webhooks.woocommerce, name="woocommerce-webhook"),
    path("t/tracker.js", tracker.tracker_js, name="tracker-js"),
    path("t/collect", tracker.collect, name="collect"),
]
