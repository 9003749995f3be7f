"""Property test: whatever happens to a person, in any order, the gate allows exactly what the rules allow.

The model below is the rulebook written as plainly as possible, independent of the code:
marketing needs a subscription on that channel and no hard bounce, complaint, erasure or three
soft bounces on the address; imports/API/shop webhooks never resubscribe an unsubscribed or
suppressed person; only the person (double opt-in, preference center, SMS START) can, and even
they cannot undo a hard bounce; transactional email stops only for a hard-bounced address.
"""

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from hypothesis.strategies import sampled_from

from compliance import gate, privacy, services
from compliance.models import ConsentSource
from segments.models import Contact
from segments.signals import consent_stated

EMAIL, PHONE = "pat@kedai-customer.jp", "+60123450000"
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("Asia/Kuala_Lumpur"))
SMS_TEXT = "I agree to marketing texts from Kedai Demo. Not a condition of purchase."
_ids = itertools.count()


class ConsentMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.contact = Contact.objects.create(email=EMAIL, phone=PHONE, timezone="Asia/Kuala_Lumpur")
        self.status = {"email": "never_asked", "sms": "never_asked"}
        self.hard = self.complaint = False
        self.erased = {"email": False, "sms": False}
        self.soft = 0

    def teardown(self):
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    # The rulebook ---------------------------------------------------------------------------------

    def blocked(self, channel: str) -> bool:
        if channel == "sms":
            return self.erased["sms"]
        return self.hard or self.complaint or self.erased["email"] or self.soft >= 3

    def marketing_allowed(self, channel: str) -> bool:
        return self.status[channel] == "subscribed" and not self.blocked(channel)

    def person_subscribed(self, channel: str) -> None:
        self.status[channel] = "subscribed"
        self.erased[channel] = False
        if channel == "email":
            self.complaint = False

    # What can happen ----------------------------------------------------------------------------------

    @rule(channel=sampled_from(["email", "sms"]), source=sampled_from(["import", "api", "shop_webhook"]))
    def statement_subscribed(self, channel, source):
        consent_stated.send(sender=None, contact=self.contact, channel=channel, state="subscribed", source=source,
                            proof={"consent_text": SMS_TEXT})
        if self.status[channel] != "unsubscribed" and not self.blocked(channel):
            self.status[channel] = "subscribed"

    @rule(channel=sampled_from(["email", "sms"]))
    def statement_unsubscribed(self, channel):
        consent_stated.send(sender=None, contact=self.contact, channel=channel, state="unsubscribed", source="import",
                            proof={})
        self.status[channel] = "unsubscribed"

    @rule()
    def form_sign_up(self):
        services.signup_request(email=EMAIL, consent_text="Yes, email me", affirmative=True)
        if self.status["email"] != "subscribed":
            self.status["email"] = "pending"

    @rule()
    def confirm_double_opt_in(self):
        services.doi_confirm(contact=self.contact)
        if self.status["email"] == "pending":
            self.person_subscribed("email")

    @rule()
    def one_click_unsubscribe(self):
        services.unsubscribe(contact=self.contact, channel="email", source=ConsentSource.ONE_CLICK)
        self.status["email"] = "unsubscribed"

    @rule(channel=sampled_from(["email", "sms"]), wanted=sampled_from([True, False]))
    def preference_center(self, channel, wanted):
        services.preferences_update(contact=self.contact, channels={channel: wanted}, topics=["promotions"],
                                    frequency="news", consent_texts={"email": "Yes", "sms": SMS_TEXT})
        if wanted:
            self.person_subscribed(channel)
        elif self.status[channel] == "subscribed":
            self.status[channel] = "unsubscribed"

    def esp_event(self, esp_name, event_type, raw):
        tracking.send(sender=None, esp_name=esp_name, event=AnymailTrackingEvent(
            event_type=event_type, recipient=EMAIL, event_id=f"prop-{next(_ids)}", esp_event=raw))

    @rule()
    def hard_bounce(self):
        self.esp_event("Postmark", "bounced", {"RecordType": "Bounce", "Type": "HardBounce", "Email": EMAIL})
        self.hard = True

    @rule()
    def soft_bounce(self):
        self.esp_event("Amazon SES", "bounced", {"notificationType": "Bounce", "bounce": {"bounceType": "Transient"}})
        self.soft += 1

    @rule()
    def complaint_received(self):
        self.esp_event("Amazon SES", "complained", {"notificationType": "Complaint",
                                                     "complaint": {"complaintFeedbackType": "abuse"}})
        self.complaint = True
        self.status = {ch: "unsubscribed" if st != "unsubscribed" else st for ch, st in self.status.items()}

    @rule()
    def esp_says_resubscribed(self):
        self.esp_event("Postmark", "subscribed", {"RecordType": "SubscriptionChange", "SuppressSending": False})

    @rule(keyword=sampled_from(["STOP", "start", " Yes ", "HELP"]))
    def sms_keyword(self, keyword):
        services.sms_keyword_handle(phone=PHONE, body=keyword)
        word = keyword.strip().upper()
        if word == "STOP":
            self.status["sms"] = "unsubscribed"
        elif word in ("START", "YES"):
            self.person_subscribed("sms")

    @rule()
    def erase_then_reimport(self):
        privacy.contact_erase(contact=self.contact, actor="property test")
        self.contact = Contact.objects.create(email=EMAIL.upper(), phone=PHONE, timezone="Asia/Kuala_Lumpur")
        self.status = {"email": "never_asked", "sms": "never_asked"}
        self.erased = {"email": True, "sms": True}

    # What must always hold ----------------------------------------------------------------------------

    @invariant()
    def gate_allows_exactly_what_the_rules_allow(self):
        for channel in ("email", "sms"):
            d = gate.can_send(contact=self.contact, channel=channel, purpose="marketing", at=NOON)
            assert d.allowed == self.marketing_allowed(channel), (channel, d.reason, self.__dict__)
        email_tx = gate.can_send(contact=self.contact, channel="email", purpose="transactional", at=NOON)
        assert email_tx.allowed == (not self.hard), email_tx.reason
        assert gate.can_send(contact=self.contact, channel="sms", purpose="transactional", at=NOON).allowed

    @invariant()
    def current_status_is_what_the_log_says(self):
        for channel in ("email", "sms"):
            assert services.consent_status(self.contact, channel) == \
                services.consent_status_from_log(self.contact, channel) == self.status[channel]


@pytest.mark.django_db
def test_the_gate_never_allows_what_the_rules_forbid(shop):
    # The rules are database-independent: explore widely on SQLite (fast round trips) and keep a
    # smaller PostgreSQL run for what differs there (row locks, partial unique indexes).
    examples = 100 if connection.vendor == "sqlite" else 40
    run_state_machine_as_test(ConsentMachine, settings=settings(
        max_examples=examples, stateful_step_count=10, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
