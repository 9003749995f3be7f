"""SMS: segment counting, opt-out line, cost; Twilio's HTTP API is the only thing mocked."""

import json
from datetime import timedelta
from decimal import Decimal
from unittest import mock
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone
from twilio.http.response import Response
from twilio.request_validator import RequestValidator

from channels.models import Message, MessageStatus, Template
from channels.services import message_create, messages_send
from channels.sms import sms_info, with_opt_out
from compliance.services import consent_status
from tests.channels.conftest import subscribe

pytestmark = pytest.mark.django_db
TOKEN = "twilio-auth-token-for-tests"
SID = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"


def test_gsm7_and_ucs2_segments_are_counted_as_carriers_do():
    assert sms_info("a" * 160) == sms_info("a" * 160) and sms_info("a" * 160).segments == 1
    assert sms_info("a" * 161).segments == 2 and sms_info("a" * 306).segments == 2 and sms_info("a" * 307).segments == 3
    assert sms_info("€" * 80).units == 160 and sms_info("€" * 81).segments == 2  # extension chars count twice
    assert sms_info("こんにちは" * 14).encoding == "UCS-2" and sms_info("こんにちは" * 14).segments == 1  # 70
    assert sms_info("こんにちは" * 14 + "!").segments == 2 and sms_info("あ" * 134).segments == 2
    assert sms_info("あ" * 135).segments == 3
    assert sms_info("Hi 😀").units == 5  # an emoji is two UTF-16 units


def test_marketing_sms_gets_the_opt_out_line_once():
    assert with_opt_out("Sale today!").endswith("Reply STOP to opt out")
    assert with_opt_out("Sale! Text STOP to end") == "Sale! Text STOP to end"


@pytest.fixture
def sms_settings(settings, tmp_path):
    settings.CHANNELS = {**settings.CHANNELS, "SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": SID,
                         "TWILIO_AUTH_TOKEN": TOKEN, "SMS_SENDERS": {"MY": "+60312345678", "default": "+14155550100"}}
    settings.COMPLIANCE = {**settings.COMPLIANCE, "SEND_WINDOWS": {**settings.COMPLIANCE["SEND_WINDOWS"], "sms": ""}}
    settings.SITE_URL = "https://marketing.kedai.example"
    return settings


@pytest.fixture
def flash_sale(db):
    return Template.objects.create(name="flash-sale", channel="sms", purpose="marketing",
                                   sms_body="{{ shop.name }}: {{ contact.first_name }}, 20% off batik until 6pm!")


def twilio_created(body: str, to: str) -> Response:
    """Twilio's documented 201 response for POST /2010-04-01/Accounts/{sid}/Messages.json."""
    return Response(201, json.dumps({
        "account_sid": SID, "api_version": "2010-04-01", "body": body, "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": None, "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000", "direction": "outbound-api",
        "error_code": None, "error_message": None, "from": "+60312345678", "num_media": "0", "num_segments": "1",
        "price": None, "price_unit": None, "messaging_service_sid": None,
        "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{SID}/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f/Media.json"},
        "to": to, "uri": f"/2010-04-01/Accounts/{SID}/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f.json"}))


def test_a_marketing_sms_goes_through_twilio_with_cost_and_segments(sms_settings, siti, flash_sale):
    subscribe(siti, "sms")
    with mock.patch("twilio.http.http_client.TwilioHttpClient.request",
                    side_effect=lambda method, url, params=None, data=None, **kw: twilio_created(data["Body"], data["To"])) as http:
        message, _ = message_create(contact=siti, template=flash_sale, idempotency_key="sms-1")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT, message.error
    method, url = http.call_args.args[:2]
    sent = http.call_args.kwargs["data"]
    assert method == "POST" and url.endswith(f"/Accounts/{SID}/Messages.json")
    assert sent["To"] == "+60123456789" and sent["From"] == "+60312345678"
    assert sent["Body"] == "Kedai Demo: Siti, 20% off batik until 6pm! Reply STOP to opt out"
    assert message.provider == "twilio" and message.provider_message_id == "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    assert message.sms_segments == 1 and message.cost == Decimal("0.0500") and message.cost_currency == "USD"


def test_sms_needs_its_own_consent_email_consent_is_not_enough(sms_settings, siti, flash_sale):
    with mock.patch("twilio.http.http_client.TwilioHttpClient.request") as http:
        message, _ = message_create(contact=siti, template=flash_sale, idempotency_key="sms-2")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.REFUSED and message.gate_reason == "no_consent"
    http.assert_not_called()


def test_sms_outside_quiet_hours_is_deferred_not_dropped(sms_settings, siti, flash_sale):
    subscribe(siti, "sms")
    local = timezone.now().astimezone(timezone.zoneinfo.ZoneInfo("Asia/Kuala_Lumpur"))
    start = (local + timedelta(hours=6)).strftime("%H:%M")
    end = (local + timedelta(hours=7)).strftime("%H:%M")
    sms_settings.COMPLIANCE = {**sms_settings.COMPLIANCE,
                               "SEND_WINDOWS": {**sms_settings.COMPLIANCE["SEND_WINDOWS"], "sms": f"{start}-{end}"}}
    with mock.patch("twilio.http.http_client.TwilioHttpClient.request") as http:
        message, _ = message_create(contact=siti, template=flash_sale, idempotency_key="sms-3")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.DEFERRED and message.gate_reason == "quiet_hours"
    assert timedelta(hours=5) < message.defer_until - timezone.now() < timedelta(hours=7)
    http.assert_not_called()


@pytest.mark.parametrize(("status", "code", "expected"), [(400, 21211, MessageStatus.FAILED),
                                                          (429, 20429, MessageStatus.DEFERRED),
                                                          (503, None, MessageStatus.DEFERRED)])
def test_twilio_errors_are_handled_by_class(sms_settings, siti, flash_sale, status, code, expected):
    subscribe(siti, "sms")
    error = {"code": code, "message": "The 'To' number is not a valid phone number.",
             "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}
    with mock.patch("twilio.http.http_client.TwilioHttpClient.request", return_value=Response(status, json.dumps(error))):
        message, _ = message_create(contact=siti, template=flash_sale, idempotency_key=f"sms-{status}")
        messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == expected, message.error


def _signed_post(client, path: str, params: dict):
    url = f"https://marketing.kedai.example{path}"
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return client.post(path, data=urlencode(params), content_type="application/x-www-form-urlencoded",
                       HTTP_X_TWILIO_SIGNATURE=signature)


def inbound(body: str, sender: str = "+60123456789") -> dict:
    """Twilio's documented inbound-message webhook parameters."""
    return {"ToCountry": "MY", "ToState": "", "SmsMessageSid": "SMf5a1d0c6f6b0bd6e0ee5f7b0f1d9b0aa", "NumMedia": "0",
            "ToCity": "", "FromZip": "", "SmsSid": "SMf5a1d0c6f6b0bd6e0ee5f7b0f1d9b0aa", "FromState": "",
            "SmsStatus": "received", "FromCity": "", "Body": body, "FromCountry": "MY", "To": "+60312345678",
            "ToZip": "", "NumSegments": "1", "MessageSid": "SMf5a1d0c6f6b0bd6e0ee5f7b0f1d9b0aa", "AccountSid": SID,
            "From": sender, "ApiVersion": "2010-04-01"}


def test_inbound_stop_unsubscribes_and_replies(client, sms_settings, siti):
    subscribe(siti, "sms")
    response = _signed_post(client, reverse("channels:twilio-inbound"), inbound("  stop "))
    assert response.status_code == 200 and response["Content-Type"] == "text/xml"
    assert b"<Message>" in response.content
    assert consent_status(siti, "sms") == "unsubscribed"
    assert consent_status(siti, "email") == "subscribed"  # SMS STOP is about SMS only


def test_inbound_with_a_bad_signature_changes_nothing(client, sms_settings, siti):
    subscribe(siti, "sms")
    params = inbound("STOP")
    response = client.post(reverse("channels:twilio-inbound"), data=urlencode(params),
                           content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE="forged=")
    assert response.status_code == 403
    assert consent_status(siti, "sms") == "subscribed"


def test_delivery_receipts_update_the_message(client, sms_settings, siti, flash_sale):
    message, _ = message_create(contact=siti, template=flash_sale, idempotency_key="sms-dlr")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENT, provider="twilio",
                                                 provider_message_id="SM1f0e8ae6ade43cb3c0ce4525424e404f")
    params = {"MessageSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "MessageStatus": "delivered",
              "SmsSid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "SmsStatus": "delivered", "AccountSid": SID,
              "From": "+60312345678", "To": "+60123456789", "ApiVersion": "2010-04-01"}
    assert _signed_post(client, reverse("channels:twilio-status"), params).status_code == 204
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED and message.delivered_at
    unknown = {**params, "MessageSid": "SMffffffffffffffffffffffffffffffff"}
    assert _signed_post(client, reverse("channels:twilio-status"), unknown).status_code == 204
