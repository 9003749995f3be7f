"""One normalisation for addresses and numbers, and the keyed hash the suppression list uses."""

import functools
import hashlib
import hmac
import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from segments import phones

# Obvious fakes seen at intake; never worth a marketing send (and they bounce or trap).
FAKE_ADDRESSES = {"test@test.com", "asdf@asdf.com", "test@example.com", "email@email.com", "a@a.com",
                  "no@no.com", "none@none.com", "fake@fake.com", "abc@abc.com", "qwerty@qwerty.com"}
FAKE_DOMAINS = {"test.com", "asdf.com", "fake.com", "qwerty.com", "mailinator.com"}
ROLE_LOCAL_PARTS = {"admin", "abuse", "postmaster", "hostmaster", "webmaster", "noreply", "no-reply",
                    "donotreply", "do-not-reply", "root", "mailer-daemon", "info", "sales", "support",
                    "office", "contact", "billing", "marketing", "help", "security", "list", "newsletter"}
_KEYBOARD_MASH = re.compile(r"^(asdf|qwer|zxcv|test|xxx|aaa)+\d*$")


def normalize_email(value: str | None) -> str:
    """Lower-case, trimmed, IDN domain as its A-label, so every entry point maps to one key."""
    value = (value or "").strip().lower()
    if "@" not in value:
        return value
    local, _, domain = value.rpartition("@")
    return f"{local}@{_a_label(domain)}"


@functools.lru_cache(maxsize=4096)
def _a_label(domain: str) -> str:
    """The IDN domain as its A-label (the same few domains come back on every import row)."""
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def normalize_phone(value, region: str | None = None) -> str:
    """E.164, or the trimmed input when it is not a parseable number."""
    raw = str(value or "").strip()
    if not raw:
        return ""
    try:
        number = phones.parse(raw, region or getattr(settings, "PHONENUMBER_DEFAULT_REGION", None))
    except phonenumbers.NumberParseException:
        return raw
    return phones.e164(number)


def normalize(channel: str, value) -> str:
    return normalize_email(value) if channel == "email" else normalize_phone(value)


def address_hash(channel: str, value, pepper: bytes | None = None) -> str:
    """HMAC-SHA256(pepper, channel:normalised). Keyed, so the list is not reversible by dictionary.

    pepper: the COMPLIANCE["HASH_PEPPER"] setting, encoded, when the caller hashes many addresses."""
    pepper = pepper or hash_pepper()
    # Push has no address of its own here: it shares the email/phone key space of the contact.
    key_channel = "sms" if channel == "sms" else "email"
    message = f"{key_channel}:{normalize(key_channel, value)}".encode()
    return hmac.digest(pepper, message, hashlib.sha256).hex()


def hash_pepper() -> bytes:
    return settings.COMPLIANCE["HASH_PEPPER"].encode()


def email_quality(value: str | None) -> str:
    """"ok", "invalid" (never deliverable: syntax, missing domain) or "suspect" (fake/role: no marketing)."""
    email = normalize_email(value)
    if not email or "@" not in email:
        return "invalid"
    local, _, domain = email.rpartition("@")
    if not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        return "invalid"
    try:
        validate_email(email)
    except ValidationError:
        return "invalid"
    return "suspect" if email_suspect(email) else "ok"


def email_suspect(email: str) -> bool:
    """A fake or role address (no marketing), for an address already normalised and known valid."""
    local, _, domain = email.rpartition("@")
    if email in FAKE_ADDRESSES or domain in FAKE_DOMAINS or domain.endswith(".invalid") or domain.endswith(".test"):
        return True
    base_local = local.split("+", 1)[0]
    return base_local in ROLE_LOCAL_PARTS or bool(_KEYBOARD_MASH.match(base_local))
