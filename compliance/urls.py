"""Public pages (no login) and the ESP webhooks. Mounted once from config/urls.py:
    path("", include("compliance.urls")),
"""

from django.urls import include, path

from compliance import views, webhooks

app_name = "compliance"

urlpatterns = [
    path("u/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("u/<str:token>/feedback/", views.unsubscribe_feedback, name="unsubscribe_feedback"),
    path("preferences/<str:token>/", views.preferences, name="preferences"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
    path("confirm/<str:token>/resend/", views.confirm_resend, name="confirm_resend"),
    path("subscribe/", views.signup, name="signup"),
    # anymail's own webhook views (/anymail/<esp>/tracking/ and /inbound/), wrapped so a malformed
    # payload gets a 400 instead of a 500 (an ESP retries a 500 forever).
    path("anymail/", include((webhooks.urlpatterns, "anymail"), namespace="anymail")),
]
