import pytest
from django.core import mail
from django.core.mail import EmailMessage

from compliance import services
from compliance.models import SuppressionReason

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def anymail_test_backend(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"


def send(to=(), cc=(), bcc=(), purpose=None, merge_data=None) -> EmailMessage:
    message = EmailMessage(subject="Hello", body="Hi", from_email="shop@kedai.example", to=list(to), cc=list(cc),
                           bcc=list(bcc))
    if purpose:
        message.metadata = {"purpose": purpose}
    if merge_data is not None:
        message.merge_data = merge_data
    message.send()
    return message


def test_suppressed_addresses_are_dropped_from_to_cc_and_bcc(db):
    for address in ("Gone@Kedai-Customer.jp", "cc-gone@kedai-customer.jp", "bcc-gone@kedai-customer.jp"):
        services.suppress(channel="email", address=address, reason=SuppressionReason.COMPLAINT)
    send(to=["Gone <gone@kedai-customer.jp>", "ok@kedai-customer.jp"], cc=["cc-gone@kedai-customer.jp"],
         bcc=["bcc-gone@kedai-customer.jp", "bcc-ok@kedai-customer.jp"],
         merge_data={"gone@kedai-customer.jp": {"n": 1}, "ok@kedai-customer.jp": {"n": 2}})
    sent = mail.outbox[0]
    assert (sent.to, sent.cc, sent.bcc) == (["ok@kedai-customer.jp"], [], ["bcc-ok@kedai-customer.jp"])
    assert sent.merge_data == {"ok@kedai-customer.jp": {"n": 2}}


def test_an_all_suppressed_message_is_cancelled(db):
    services.suppress(channel="email", address="gone@kedai-customer.jp", reason=SuppressionReason.HARD_BOUNCE)
    message = EmailMessage(subject="Receipt", body="Hi", from_email="shop@kedai.example",
                           to=["gone@kedai-customer.jp"])
    message.metadata = {"purpose": "transactional"}
    assert message.send() == 0  # cancelled quietly: nothing reached the ESP
    assert mail.outbox == [] and message.anymail_status.status is None


def test_transactional_mail_passes_a_complaint_but_not_a_hard_bounce(db):
    services.suppress(channel="email", address="complained@kedai-customer.jp", reason=SuppressionReason.COMPLAINT)
    services.suppress(channel="email", address="bounced@kedai-customer.jp", reason=SuppressionReason.HARD_BOUNCE)
    send(to=["complained@kedai-customer.jp", "bounced@kedai-customer.jp"], purpose="transactional")
    assert mail.outbox[0].to == ["complained@kedai-customer.jp"]
