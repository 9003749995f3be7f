"""Web push: VAPID-signed, encrypted payloads; the push service's HTTP endpoint is the only mock."""

import base64
import json
import os
from unittest import mock

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.urls import reverse

from channels.models import MessageStatus, PushSubscription, Template
from channels.push import subscription_save
from channels.services import message_create, messages_send
from compliance.services import consent_status
from segments.models import ContactIdentifier

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser_keys() -> dict:
    """What a real browser's PushSubscription.toJSON() carries: a P-256 public key and a 16-byte secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return {"p256dh": b64(public), "auth": b64(os.urandom(16))}


@pytest.fixture
def vapid(settings):
    key = ec.generate_private_key(ec.SECP256R1())
    private = b64(key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64(key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
    settings.CHANNELS = {**settings.CHANNELS, "VAPID_PRIVATE_KEY": private, "VAPID_PUBLIC_KEY": public,
                         "VAPID_SUBJECT": "mailto:ops@kedai.example"}
    settings.COMPLIANCE = {**settings.COMPLIANCE, "SEND_WINDOWS": {**settings.COMPLIANCE["SEND_WINDOWS"], "push": ""}}
    return public


@pytest.fixture
def restock(db):
    return Template.objects.create(name="back-in-stock", channel="push", purpose="marketing",
                                   push_title="{{ contact.first_name }}, it's back!",
                                   push_body="The Carbon Steel Wok is in stock again.",
                                   push_url="https://kedai.example/p/wok")


def _response(status: int) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = b""
    return r


def test_browser_subscribes_through_the_public_endpoint(client, siti, vapid):
    ContactIdentifier.objects.create(contact=siti, kind="anonymous", source="tracker", value="aid-123")
    body = {"subscription": {"endpoint": "https://fcm.googleapis.com/fcm/send/abc", "keys": browser_keys()},
            "anonymous_id": "aid-123"}
    r = client.post(reverse("channels:push-subscribe"), json.dumps(body), content_type="application/json")
    assert r.status_code == 201
    assert PushSubscription.objects.get().contact == siti
    bad = client.post(reverse("channels:push-subscribe"), "{not json", content_type="application/json")
    assert bad.status_code == 400 and "expected" in bad.json()["error"]
    unknown = client.post(reverse("channels:push-subscribe"), json.dumps({**body, "anonymous_id": "nobody"}),
                          content_type="application/json")
    assert unknown.status_code == 404
    assert vapid.replace("-", "\\u002D").encode() in client.get(reverse("channels:push-snippet")).content
    assert b"showNotification" in client.get(reverse("channels:push-sw")).content


def test_push_is_sent_encrypted_with_vapid_and_expired_subscriptions_are_removed(siti, vapid, restock):
    live = subscription_save(contact=siti, endpoint="https://fcm.googleapis.com/fcm/send/live", **browser_keys())
    subscription_save(contact=siti, endpoint="https://updates.push.services.mozilla.com/wpush/v2/gone",
                      **browser_keys())
    calls = []

    def post(url, data=None, headers=None, timeout=None):
        calls.append((url, data, headers))
        return _response(410 if "gone" in url else 201)

    with mock.patch("pywebpush.requests.post", side_effect=post):
        message, _ = message_create(contact=siti, template=restock, idempotency_key="push-1")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT, message.error
    assert len(calls) == 2
    url, data, headers = next(c for c in calls if "live" in c[0])
    assert headers["content-encoding"] == "aes128gcm" and headers["authorization"].startswith("vapid t=")
    assert b"Siti" not in data  # the payload is encrypted for the browser
    assert list(PushSubscription.objects.values_list("pk", flat=True)) == [live.pk]


def test_a_contact_whose_only_subscription_expired_fails_permanently(siti, vapid, restock):
    subscription_save(contact=siti, endpoint="https://fcm.googleapis.com/fcm/send/old", **browser_keys())
    with mock.patch("pywebpush.requests.post", return_value=_response(404)):
        message, _ = message_create(contact=siti, template=restock, idempotency_key="push-2")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert not PushSubscription.objects.exists()
    assert consent_status(siti, "push") == "unsubscribed"  # no browser left: no push consent


def test_without_a_subscription_push_is_refused_by_the_gate(siti, vapid, restock):
    with mock.patch("pywebpush.requests.post") as post:
        message, _ = message_create(contact=siti, template=restock, idempotency_key="push-3")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.REFUSED and message.gate_reason == "no_consent"
    post.assert_not_called()
