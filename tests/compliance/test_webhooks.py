"""ESP payloads as the ESPs document them (and anymail's test suite replays them), POSTed through
the real anymail webhook views with the WEBHOOK_SECRET basic auth."""

import base64
import hashlib
import hmac
import json

import pytest

from compliance import gate, services
from compliance.models import ConsentEvent, EspEvent, Suppression
from segments.models import Contact
from tests.compliance.conftest import make_contact, subscribe

pytestmark = [pytest.mark.django_db,
              # anymail 13.0.1+ warns that SendGrid is no longer officially supported (issue #432).
              pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")]


def ses_bounce(bounce_type="Permanent", sns_id="19ba9823-d7f2-53c1-860e-cb10e0d13dfc"):
    # https://docs.aws.amazon.com/ses/latest/DeveloperGuide/notification-examples.html#notification-examples-bounce
    raw_ses_event = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "reportingMTA": "dns; email.example.com",
            "bouncedRecipients": [{
                "emailAddress": "jane@example.com",
                "status": "5.1.1",
                "action": "failed",
                "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User unknown",
            }],
            "bounceSubType": "General",
            "timestamp": "2016-01-27T14:59:44.101Z",
            "feedbackId": "00000138111222aa-44455566-cccc-cccc-cccc-ddddaaaa068a-000000",
            "remoteMtaIp": "127.0.2.0",
        },
        "mail": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "source": "john@example.com",
            "sourceArn": "arn:aws:ses:us-west-2:888888888888:identity/example.com",
            "sourceIp": "127.0.3.0",
            "sendingAccountId": "123456789012",
            "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": '"John Doe" <john@example.com>'},
                {"name": "To", "value": '"Jane Doe" <jane@example.com>, "Mary Doe" <mary@example.com>,'
                                        ' "Richard Doe" <richard@example.com>'},
                {"name": "Message-ID", "value": "custom-message-ID"},
                {"name": "Subject", "value": "Hello"},
                {"name": "Content-Type", "value": 'text/plain; charset="UTF-8"'},
                {"name": "Content-Transfer-Encoding", "value": "base64"},
                {"name": "Date", "value": "Wed, 27 Jan 2016 14:05:45 +0000"},
            ],
            "commonHeaders": {
                "from": ["John Doe <john@example.com>"],
                "date": "Wed, 27 Jan 2016 14:05:45 +0000",
                "to": ["Jane Doe <jane@example.com>, Mary Doe <mary@example.com>, Richard Doe <richard@example.com>"],
                "messageId": "custom-message-ID",
                "subject": "Hello",
            },
        },
    }
    return sns(raw_ses_event, sns_id)


def ses_complaint():
    raw_ses_event = {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": "richard@example.com"}],
            "complaintFeedbackType": "abuse",
        },
        "mail": {
            "messageId": "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
            "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
        },
    }
    return sns(raw_ses_event, "a1b2c3d4-0000-53c1-860e-cb10e0d13dfc")


def sns(raw_ses_event, sns_id):
    return {
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": "arn:aws:sns:us-east-1:1234567890:SES_Events",
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(raw_ses_event) + "\n",
        "Timestamp": "2018-03-26T17:58:59.675Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE-SIGNATURE==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn...",
    }


def post_sns(client, message):
    # SNS posts JSON as text/plain, with its message id and type in headers.
    return client.post("/anymail/amazon_ses/tracking/", data=json.dumps(message),
                       content_type="text/plain; charset=UTF-8",
                       HTTP_X_AMZ_SNS_MESSAGE_ID=message["MessageId"], HTTP_X_AMZ_SNS_MESSAGE_TYPE=message["Type"])


POSTMARK_HARD_BOUNCE = {
    "RecordType": "Bounce",
    "ID": 901542550,
    "Type": "HardBounce",
    "TypeCode": 1,
    "ServerID": 23,
    "Name": "Hard bounce",
    "MessageID": "2706ee8a-737c-4285-b032-ccd317af53ed",
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "bounce@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Postmark event test",
    "Content": "...",
}
POSTMARK_SPAM_COMPLAINT = {
    "RecordType": "SpamComplaint",
    "ID": 901542551,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "Name": "Spam complaint",
    "Tag": "Test",
    "MessageID": "2706ee8a-737c-4285-b032-ccd317af53ed",
    "ServerID": 1234,
    "Description": "",
    "Details": "Test spam complaint details",
    "Email": "spam@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": False,
    "Subject": "Postmark event test",
}
POSTMARK_RESUBSCRIBE = {
    "RecordType": "SubscriptionChange",
    "MessageID": "a4909a96-73d7-4c49-b148-a54522d3f7ac",
    "ServerID": 23,
    "MessageStream": "outbound",
    "ChangedAt": "2022-06-05T17:17:32Z",
    "Recipient": "spam@example.com",
    "Origin": "Recipient",
    "SuppressSending": False,
    "SuppressionReason": None,
    "Tag": "welcome-email",
    "Metadata": {"example": "value", "example_2": "value"},
}


def post_postmark(client, event):
    return client.post("/anymail/postmark/tracking/", data=json.dumps(event), content_type="application/json")


MAILGUN_KEY = "mailgun-signing-key-for-tests"


MAILGUN_TOKEN = "651869375b9df3c98fc15c4889b102119add1235c38fc92824"


def mailgun_signed(event_data, token=MAILGUN_TOKEN, key=MAILGUN_KEY):
    # https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/#securing-webhooks
    timestamp = str(int(event_data["timestamp"]))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


MAILGUN_FAILED_PERMANENT = {
    "event": "failed",
    "severity": "permanent",
    "reason": "bounce",
    "recipient": "invalid@example.com",
    "timestamp": 1534110422.389832,
    "log-level": "error",
    "message": {"headers": {"to": "invalid@example.com",
                            "message-id": "20180812214658.1.0DF563D0B3597700@example.org", "from": "Test Sender "}},
    "delivery-status": {
        "tls": True, "mx-host": "aspmx.l.example.org", "attempt-no": 1, "description": "",
        "session-seconds": 2.952177047729492, "utf8": True, "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist. Please try\n"
                   "5.1.1 double-checking the recipient's email address for typos",
        "certificate-verified": True,
    },
}
MAILGUN_FAILED_TEMPORARY = {
    "event": "failed",
    "severity": "temporary",
    "reason": "generic",
    "timestamp": 1534111899.659519,
    "log-level": "warn",
    "message": {"headers": {"to": "undeliverable@nomx.example.com",
                            "message-id": "20180812214638.1.4A7D468E9BC18C5D@example.org",
                            "from": "Test Sender ", "subject": "Testing"}},
    "recipient": "undeliverable@nomx.example.com",
    "delivery-status": {"attempt-no": 3, "description": "No MX for nomx.example.com", "session-seconds": 0.0,
                        "retry-seconds": 1800, "code": 498, "message": "No MX for nomx.example.com"},
}


def post_mailgun(client, payload):
    return client.post("/anymail/mailgun/tracking/", data=json.dumps(payload), content_type="application/json")


SENDGRID_BOUNCE = {
    "ip": "167.89.17.173",
    "status": "5.1.1",
    "smtp-id": "<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>",
    "sg_event_id": "lC0Rc-FuQmKbnxCWxX1jRQ",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
    "sg_message_id": "Lli-03HcQ5-JLybO9fXsJg.filter0077p1las1.21536.5717FC482.0",
    "tls": 1,
    "event": "bounce",
    "email": "noreply-bounce@example.com",
    "timestamp": 1461095250,
    "anymail_id": "de212213-bb66-4302-8f3f-20acdb7a104e",
    "type": "bounce",
}


def post_sendgrid(client, events):
    return client.post("/anymail/sendgrid/tracking/", data=json.dumps(events), content_type="application/json")


def suppressed(address):
    return {s.reason for s in Suppression.objects.active() if s.address == address}


# Amazon SES via SNS ---------------------------------------------------------------------------

def test_ses_permanent_bounce_suppresses_only_the_bounced_recipient(hook_client):
    jane, mary = make_contact(email="jane@example.com"), make_contact(email="mary@example.com")
    subscribe(jane)
    subscribe(mary)
    assert post_sns(hook_client, ses_bounce()).status_code == 200
    assert suppressed("jane@example.com") == {"hard_bounce"}
    assert suppressed("mary@example.com") == set() and suppressed("richard@example.com") == set()
    assert gate.can_send(contact=jane, channel="email", purpose="transactional").reason == "suppressed_hard_bounce"
    assert gate.can_send(contact=mary, channel="email", purpose="marketing").allowed


def test_ses_transient_bounces_suppress_marketing_only_after_three(hook_client):
    jane = make_contact(email="jane@example.com")
    subscribe(jane)
    for n in range(3):
        assert post_sns(hook_client, ses_bounce("Transient", sns_id=f"transient-{n}")).status_code == 200
        expected = {"soft_bounces"} if n == 2 else set()
        assert suppressed("jane@example.com") == expected
    assert gate.can_send(contact=jane, channel="email", purpose="marketing").reason == "suppressed_soft_bounces"
    assert gate.can_send(contact=jane, channel="email", purpose="transactional").allowed


def test_ses_complaint_suppresses_and_unsubscribes_from_all_marketing(hook_client):
    richard = make_contact(email="richard@example.com", phone="+60111222333")
    subscribe(richard)
    subscribe(richard, "sms")
    assert post_sns(hook_client, ses_complaint()).status_code == 200
    assert suppressed("richard@example.com") == {"complaint"}
    assert services.consent_status(richard, "email") == services.consent_status(richard, "sms") == "unsubscribed"
    assert gate.can_send(contact=richard, channel="email", purpose="marketing").reason == "suppressed_complaint"


def test_ses_without_basic_auth_gets_401_and_changes_nothing(client, webhook_settings):
    r = post_sns(client, ses_bounce())
    assert r.status_code == 401 and r["WWW-Authenticate"] == 'Basic realm="Anymail WEBHOOK_SECRET"'
    subscription = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                    "Token": "2336412f37...", "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
                    "Message": "You have chosen to subscribe to the topic ...",
                    "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f37",
                    "Timestamp": "2012-04-26T20:45:04.751Z"}
    assert post_sns(client, subscription).status_code == 401
    assert not EspEvent.objects.exists() and not Suppression.objects.exists()


def test_an_unparsable_sns_message_is_a_400_not_a_500(hook_client):
    message = sns({}, "broken-1")
    message["Message"] = "{not json"
    assert post_sns(hook_client, message).status_code == 400


# Postmark ------------------------------------------------------------------------------------

def test_postmark_hard_bounce_suppresses(hook_client):
    assert post_postmark(hook_client, POSTMARK_HARD_BOUNCE).status_code == 200
    assert suppressed("bounce@example.com") == {"hard_bounce"}


def test_postmark_soft_bounce_and_spam_notification_only_count_as_soft(hook_client):
    soft = {**POSTMARK_HARD_BOUNCE, "ID": 1001, "Type": "SoftBounce", "TypeCode": 4096, "Name": "Soft bounce"}
    notification = {**POSTMARK_SPAM_COMPLAINT, "RecordType": "Bounce", "ID": 1002, "Type": "SpamNotification",
                    "TypeCode": 1024, "Name": "Spam notification", "Email": "bounce@example.com"}
    assert post_postmark(hook_client, soft).status_code == 200
    assert post_postmark(hook_client, notification).status_code == 200
    assert suppressed("bounce@example.com") == set()
    assert list(EspEvent.objects.order_by("id").values_list("event_type", "kind")) == [
        ("bounced", "soft_bounce"), ("complained", "soft_bounce")]


def test_postmark_spam_complaint_then_esp_resubscribe_never_lifts_it(hook_client):
    spam = make_contact(email="spam@example.com")
    subscribe(spam)
    assert post_postmark(hook_client, POSTMARK_SPAM_COMPLAINT).status_code == 200
    assert post_postmark(hook_client, POSTMARK_RESUBSCRIBE).status_code == 200
    assert suppressed("spam@example.com") == {"complaint"}
    assert EspEvent.objects.filter(kind="subscribed").count() == 1
    assert services.consent_status(spam, "email") == "unsubscribed"


def test_postmark_with_wrong_basic_auth_is_refused_with_no_side_effects(client, webhook_settings):
    bad = "Basic " + base64.b64encode(b"hooks:wrong").decode()
    r = client.post("/anymail/postmark/tracking/", data=json.dumps(POSTMARK_HARD_BOUNCE),
                    content_type="application/json", HTTP_AUTHORIZATION=bad)
    assert r.status_code == 400
    assert not EspEvent.objects.exists() and not Suppression.objects.exists()


def test_replayed_webhooks_are_applied_once(hook_client):
    for _ in range(3):
        assert post_postmark(hook_client, POSTMARK_HARD_BOUNCE).status_code == 200
        assert post_sns(hook_client, ses_bounce("Transient", sns_id="same-sns-id")).status_code == 200
    assert EspEvent.objects.count() == 2
    assert Suppression.objects.count() == 1


def test_malformed_json_is_a_400_and_unknown_recipients_create_no_contact(hook_client):
    r = hook_client.post("/anymail/postmark/tracking/", data=b"{\"RecordType\": \"Bou", content_type="application/json")
    assert r.status_code == 400
    assert post_postmark(hook_client, POSTMARK_HARD_BOUNCE).status_code == 200
    assert not Contact.objects.filter(email="bounce@example.com").exists()


def test_huge_bodies_are_refused_before_parsing(hook_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    huge = {**POSTMARK_HARD_BOUNCE, "Content": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    assert post_postmark(hook_client, huge).status_code == 400
    assert not EspEvent.objects.exists()


def test_admin_shows_esp_strings_escaped(hook_client, staff_client):
    hostile = {**POSTMARK_HARD_BOUNCE, "ID": 7, "Description": "<script>alert(1)</script>"}
    assert post_postmark(hook_client, hostile).status_code == 200
    page = staff_client.get("/admin/compliance/espevent/")
    assert page.status_code == 200
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.content and b"<script>alert(1)" not in page.content


# Mailgun ---------------------------------------------------------------------------------------

def test_mailgun_permanent_failure_suppresses_and_temporary_only_defers(hook_client):
    assert post_mailgun(hook_client, mailgun_signed(MAILGUN_FAILED_PERMANENT)).status_code == 200
    assert post_mailgun(hook_client, mailgun_signed(MAILGUN_FAILED_TEMPORARY, token="0" * 50)).status_code == 200
    assert suppressed("invalid@example.com") == {"hard_bounce"}
    assert suppressed("undeliverable@nomx.example.com") == set()
    assert EspEvent.objects.get(recipient="undeliverable@nomx.example.com").kind == "deferred"


def test_mailgun_bad_signature_and_replayed_token(hook_client):
    forged = mailgun_signed(MAILGUN_FAILED_PERMANENT, key="not-the-key")
    assert post_mailgun(hook_client, forged).status_code == 400
    assert not EspEvent.objects.exists()
    payload = mailgun_signed(MAILGUN_FAILED_PERMANENT)
    assert post_mailgun(hook_client, payload).status_code == 200
    assert post_mailgun(hook_client, payload).status_code == 200
    assert EspEvent.objects.count() == 1
    # The signature covers only timestamp + token: a valid block spliced onto another event is dropped.
    spliced = {"signature": payload["signature"],
               "event-data": {**MAILGUN_FAILED_PERMANENT, "recipient": "victim@kedai-customer.jp"}}
    assert post_mailgun(hook_client, spliced).status_code == 200
    assert EspEvent.objects.count() == 1 and suppressed("victim@kedai-customer.jp") == set()


# SendGrid --------------------------------------------------------------------------------------

def test_sendgrid_bounce_is_hard_but_blocked_is_soft(hook_client):
    blocked = {**SENDGRID_BOUNCE, "sg_event_id": "blocked-1", "email": "blocked@example.com", "type": "blocked",
               "reason": "550 5.7.1 Message rejected due to policy"}
    assert post_sendgrid(hook_client, [SENDGRID_BOUNCE, blocked]).status_code == 200
    assert suppressed("noreply-bounce@example.com") == {"hard_bounce"}
    assert suppressed("blocked@example.com") == set()
    assert EspEvent.objects.get(recipient="blocked@example.com").kind == "soft_bounce"


def test_unknown_esp_event_types_are_kept_and_answered_200(hook_client):
    future = {"email": "someone@example.com", "timestamp": 1461095250, "event": "brand_new_event_type",
              "sg_event_id": "future-1"}
    assert post_sendgrid(hook_client, [future]).status_code == 200
    assert EspEvent.objects.get().kind == "unknown"
    missing_event_key = [{"email": "someone@example.com", "timestamp": 1461095250}]
    assert post_sendgrid(hook_client, missing_event_key).status_code == 400


def test_an_esp_unsubscribe_is_recorded_as_a_withdrawal(hook_client):
    c = make_contact(email="leaver@kedai-customer.jp")
    subscribe(c)
    event = {"email": "leaver@kedai-customer.jp", "timestamp": 1461095250, "event": "unsubscribe",
             "sg_event_id": "unsub-1"}
    assert post_sendgrid(hook_client, [event]).status_code == 200
    assert ConsentEvent.objects.filter(contact=c, source="esp_event", status="unsubscribed").count() == 1
