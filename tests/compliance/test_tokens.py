"""The unsubscribe and preference tokens are exactly what django.core.signing.dumps makes."""

from unittest import mock

import pytest
from django.core import signing

from compliance import tokens
from tests.compliance.conftest import make_contact

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_tokens_are_signing_dumps_byte_for_byte(shop, channel, settings):
    contact = make_contact()
    with mock.patch("time.time", return_value=1_790_000_123.7):
        expected_unsub = signing.dumps({"c": contact.pk, "f": tokens._fingerprint(contact), "ch": channel},
                                       salt=tokens.UNSUBSCRIBE_SALT, compress=False)
        expected_prefs = signing.dumps({"c": contact.pk, "f": tokens._fingerprint(contact), "ch": "email"},
                                       salt=tokens.PREFERENCES_SALT, compress=False)
        assert tokens.unsubscribe_token(contact, channel) == expected_unsub
        assert tokens.preferences_token(contact) == expected_prefs
        settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
        rotated = signing.dumps({"c": contact.pk, "f": tokens._fingerprint(contact), "ch": channel},
                                salt=tokens.UNSUBSCRIBE_SALT, compress=False)
        assert rotated != expected_unsub
        assert tokens.unsubscribe_token(contact, channel) == rotated
    assert tokens.read_unsubscribe(tokens.unsubscribe_token(contact, channel))["ch"] == channel
    assert tokens.read_preferences(tokens.preferences_token(contact))["c"] == contact.pk
