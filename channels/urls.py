from django.urls import path

from channels import views

app_name = "channels"
urlpatterns = [
    path("c/<str:token>", views.click, name="click"),
    path("o/<str:token>.gif", views.open_pixel, name="open"),
    path("webhooks/twilio/inbound", views.twilio_inbound, name="twilio-inbound"),
    path("webhooks/twilio/status", views.twilio_status, name="twilio-status"),
    path("push/sw.js", views.service_worker, name="push-sw"),
    path("push/subscribe.js", views.push_snippet, name="push-snippet"),
    path("push/subscriptions", views.push_subscribe, name="push-subscribe"),
]
