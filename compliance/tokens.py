"""Signed tokens for the public pages (django.core.signing).

The payload holds ids only (never an address): the contact id, a fingerprint of the contact's
creation time (so a token can never act on a different contact that later gets the same id) and,
for unsubscribe links, the channel. Each purpose has its own salt, so a token minted for one page
is refused by the others. Unsubscribe and preference tokens never expire (CAN-SPAM wants at least
30 days; Gmail/Yahoo want them to keep working); rotating SECRET_KEY keeps them valid through
SECRET_KEY_FALLBACKS. Double opt-in tokens expire after COMPLIANCE["DOI_TOKEN_DAYS"].
"""

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

from segments.models import Contact

UNSUBSCRIBE_SALT = "compliance.unsubscribe.v1"
PREFERENCES_SALT = "compliance.preferences.v1"
CONFIRM_SALT = "compliance.confirm.v1"


class TokenInvalid(Exception):
    """Tampered, unknown, or for another page."""


class TokenExpired(TokenInvalid):
    """Genuine but too old (double opt-in only); .payload still identifies the contact."""

    def __init__(self, payload: dict):
        super().__init__("expired")
        self.payload = payload


@dataclass(frozen=True)
class TokenData:
    contact_id: int
    channel: str


def _fingerprint(contact: Contact) -> int:
    return int(contact.created_at.timestamp()) if contact.created_at else 0


_MACS: dict[tuple[str, str], object] = {}


def _mac(salt: str):
    """signing.TimestampSigner(salt=salt)'s HMAC (sha256, key derived from salt + "signer" and
    SECRET_KEY), with the derived key computed once per salt and secret instead of per token."""
    secret = settings.SECRET_KEY
    mac = _MACS.get((salt, secret))
    if mac is None:
        if len(_MACS) > 16:
            _MACS.clear()
        key = hashlib.sha256(f"{salt}signer".encode() + secret.encode()).digest()
        mac = _MACS[(salt, secret)] = hmac.new(key, digestmod=hashlib.sha256)
    return mac


def _dumps(contact: Contact, salt: str, channel: str = "email") -> str:
    """signing.dumps({"c", "f", "ch"}, salt=salt, compress=False), byte for byte (two of these
    per marketing email; tests/compliance/test_tokens.py compares), without Django's per-call
    key derivation."""
    data = json.dumps({"c": contact.pk, "f": _fingerprint(contact), "ch": channel}, separators=(",", ":"))
    value = f"{signing.b64_encode(data.encode('latin-1')).decode()}:{signing.b62_encode(int(time.time()))}"
    mac = _mac(salt).copy()
    mac.update(value.encode())
    return f"{value}:{signing.b64_encode(mac.digest()).decode()}"


def unsubscribe_token(contact: Contact, channel: str = "email") -> str:
    return _dumps(contact, UNSUBSCRIBE_SALT, channel)


def preferences_token(contact: Contact) -> str:
    return _dumps(contact, PREFERENCES_SALT)


def confirm_token(contact: Contact, channel: str = "email") -> str:
    return signing.dumps({"c": contact.pk, "f": _fingerprint(contact), "ch": channel}, salt=CONFIRM_SALT)


def _payload(token: str, salt: str, max_age=None) -> dict:
    if not isinstance(token, str) or len(token) > 500:
        raise TokenInvalid("malformed")
    try:
        payload = signing.loads(token, salt=salt, max_age=max_age)
    except signing.SignatureExpired as err:
        raise TokenExpired(signing.loads(token, salt=salt)) from err
    except (signing.BadSignature, ValueError, UnicodeError) as err:
        raise TokenInvalid("bad signature") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), int):
        raise TokenInvalid("bad payload")
    return payload


def contact_for(payload: dict) -> Contact | None:
    """The contact a genuine token names, or None when it was erased since the token was minted."""
    contact = Contact.objects.filter(pk=payload["c"]).first()
    if contact is None or _fingerprint(contact) != payload.get("f"):
        return None
    return contact


def read_unsubscribe(token: str) -> dict:
    return _payload(token, UNSUBSCRIBE_SALT)


def read_preferences(token: str) -> dict:
    return _payload(token, PREFERENCES_SALT)


def read_confirm(token: str) -> dict:
    return _payload(token, CONFIRM_SALT, max_age=settings.COMPLIANCE["DOI_TOKEN_DAYS"] * 86400)
