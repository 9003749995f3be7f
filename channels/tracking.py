"""Signed click and open tracking: the redirect only ever goes to a URL that was in the message."""

from django.conf import settings
from django.core import signing
from django.urls import reverse

CLICK_SALT = "channels.click"
OPEN_SALT = "channels.open"


def click_url(message_id: int, index: int) -> str:
    token = signing.dumps([message_id, index], salt=CLICK_SALT, compress=True)
    return f"{settings.SITE_URL}{reverse('channels:click', args=[token])}"


def open_url(message_id: int) -> str:
    token = signing.dumps(message_id, salt=OPEN_SALT)
    return f"{settings.SITE_URL}{reverse('channels:open', args=[token])}"


def read_click(token: str) -> tuple[int, int] | None:
    try:
        message_id, index = signing.loads(token, salt=CLICK_SALT)
        return int(message_id), int(index)
    except (signing.BadSignature, ValueError, TypeError):
        return None


def read_open(token: str) -> int | None:
    try:
        return int(signing.loads(token, salt=OPEN_SALT))
    except (signing.BadSignature, ValueError, TypeError):
        return None
