from datetime import UTC, datetime

import pytest

from compliance import gate, services
from compliance.models import ConsentEvent, SuppressionReason
from segments.models import Contact
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db
PHONE = "+60123456789"


@pytest.fixture
def texter(shop):
    c = make_contact(email="texter@kedai-customer.my", phone=PHONE)
    subscribe(c)
    subscribe(c, "sms")
    return c


@pytest.mark.parametrize("body", ["STOP", "stop", " Stop ", "STOPALL", "UNSUBSCRIBE", "cancel", "End", "QUIT",
                                  "revoke", "OPTOUT", "opt out", "stop."])
def test_stop_keywords_unsubscribe_sms_only_with_one_confirmation(texter, body):
    reply = services.sms_keyword_handle(phone="+60 12-345 6789", body=body, message_id="SM1")
    assert "unsubscribed" in reply and "Kedai Demo" in reply
    assert services.consent_status(texter, "sms") == "unsubscribed"
    assert services.consent_status(texter, "email") == "subscribed"
    assert gate.can_send(contact=texter, channel="sms", purpose="marketing").reason == "unsubscribed"
    event = ConsentEvent.objects.get(contact=texter, channel="sms", status="unsubscribed")
    assert event.source == "sms_keyword" and event.proof["message_id"] == "SM1"


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_start_keywords_resubscribe_sms_without_touching_email(texter, body):
    services.sms_keyword_handle(phone=PHONE, body="STOP")
    services.suppress(channel="email", address=texter.email, reason=SuppressionReason.HARD_BOUNCE)
    reply = services.sms_keyword_handle(phone=PHONE, body=body)
    assert "subscribed" in reply and "STOP" in reply and "Msg&data rates may apply" in reply
    assert gate.can_send(contact=texter, channel="sms", purpose="marketing",
                         at=datetime(2026, 3, 2, 4, 0, tzinfo=UTC)).allowed
    assert services.active_suppressions(texter, "email") == {"hard_bounce"}


@pytest.mark.parametrize("body", ["HELP", " info "])
def test_help_replies_name_the_shop_and_how_to_stop(texter, body):
    reply = services.sms_keyword_handle(phone=PHONE, body=body)
    assert "Kedai Demo" in reply and "STOP" in reply and "hello@kedai.example" in reply
    assert "Msg&data rates may apply" in reply
    assert services.consent_status(texter, "sms") == "subscribed"


def test_other_messages_get_no_reply_and_change_nothing(texter):
    assert services.sms_keyword_handle(phone=PHONE, body="Is my order shipped?") is None
    assert services.consent_status(texter, "sms") == "subscribed"


def test_stop_from_an_unknown_number_is_still_honoured_against_later_imports(shop):
    services.sms_keyword_handle(phone="+60199990000", body="STOP")
    contact = Contact.objects.get(phone="+60199990000")
    services.consent_statement_receive(contact=contact, channel="sms", state="subscribed", source="import",
                                       proof={"consent_text": "from the old shop system"})
    assert services.consent_status(contact, "sms") == "unsubscribed"


def test_a_repeated_stop_gets_no_second_confirmation(texter):
    assert services.sms_keyword_handle(phone=PHONE, body="STOP") is not None
    assert services.sms_keyword_handle(phone=PHONE, body="stop") is None
    assert ConsentEvent.objects.filter(contact=texter, channel="sms", status="unsubscribed").count() == 1
