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


@pytest.mark.parametrize("body", ["ARRET", "Remove", "TD"])
def test_the_opt_out_words_aws_requires_are_keywords_too(texter, body):
    assert "unsubscribed" in services.sms_keyword_handle(phone=PHONE, body=body)
    assert services.consent_status(texter, "sms") == "unsubscribed"


@pytest.mark.parametrize("body", ["Please stop texting me", "STOP PLEASE", "stop sending me these messages!!",
                                  "Don’t text me again", "do not contact me", "take me off your list",
                                  "remove my number please", "I want to opt-out", "unsubscribe me", "wrong number",
                                  "Leave me alone", "no más mensajes", "Berhenti", "arrêtez"])
def test_free_text_that_asks_to_stop_is_honoured_and_flagged_for_review(texter, body, staff_client):
    reply = services.sms_keyword_handle(phone=PHONE, body=body, message_id="SM9")
    assert "unsubscribed" in reply
    assert services.consent_status(texter, "sms") == "unsubscribed"
    assert services.consent_status(texter, "email") == "subscribed"
    event = ConsentEvent.objects.get(contact=texter, channel="sms", status="unsubscribed")
    assert event.note == services.PROBABLE_OPT_OUT_NOTE
    assert event.proof == {"message_id": "SM9", "free_text": body}
    listed = staff_client.get("/admin/compliance/consentevent/?review=probable_opt_out")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 1


@pytest.mark.parametrize("body", ["Is my order shipped?", "Can you stop my order from shipping", "Thanks!",
                                  "When does the sale end?", "yes please, send the blue one"])
def test_ordinary_replies_are_not_mistaken_for_opt_outs(texter, body):
    assert services.sms_keyword_handle(phone=PHONE, body=body) is None
    assert services.consent_status(texter, "sms") == "subscribed"
