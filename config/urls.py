from django.contrib import admin
from django.urls import include, path

from segments import views as segment_views

urlpatterns = [
    path("", segment_views.home, name="home"),
    path("healthz", segment_views.healthz, name="healthz"),
    # First: the busiest URLs (events API, tracker) are then found without trying the others.
    path("", include("segments.ingest.urls")),  # events API, shop webhooks, storefront tracker
    path("admin/", admin.site.urls),
    path("", include("compliance.urls")),  # public pages + /anymail/<esp>/tracking/ webhooks
    path("", include("channels.urls")),  # click/open tracking, Twilio webhooks, web push
]
