import pytest

from compliance import services
from compliance.models import ConsentSource, ConsentStatus
from segments.models import Contact

WEBHOOK_AUTH = "hooks:s3cret-webhook"


def make_contact(email: str | None = "aiko@kedai-customer.jp", phone: str | None = None, **extra) -> Contact:
    return Contact.objects.create(email=email, phone=phone, **extra)


def subscribe(contact: Contact, channel: str = "email", source: str = ConsentSource.IMPORT) -> None:
    text = "I agree to receive marketing texts. Not a condition of purchase." if channel == "sms" else "Yes, email me"
    services.consent_record(contact=contact, channel=channel, status=ConsentStatus.SUBSCRIBED, source=source,
                            consent_text=text, actor="test")


@pytest.fixture
def contact(shop) -> Contact:
    """Aiko: an email subscriber with a Malaysian mobile number (no SMS consent)."""
    c = make_contact(phone="+60123456789", timezone="Asia/Kuala_Lumpur")
    subscribe(c)
    return c


@pytest.fixture
def webhook_settings(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_AUTH, "MAILGUN_WEBHOOK_SIGNING_KEY": "mailgun-signing-key-for-tests"}
    return settings


@pytest.fixture
def hook_client(client, webhook_settings, shop):
    import base64

    client.defaults["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(WEBHOOK_AUTH.encode()).decode()
    return client
