"""Signed click and open tracking: the redirect only ever goes to a URL that was in the message.

Tokens are "<message id>-<link index>:<HMAC>" (django.core.signing.Signer): short, cheap to make
for every link of every message, and impossible to forge without SECRET_KEY.
"""

from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.urls import reverse

_click = signing.Signer(salt="channels.click")
_open = signing.Signer(salt="channels.open")


@lru_cache(maxsize=8)
def _path_prefix(name: str) -> str:
    # reverse() once with a placeholder: a message has many links and a campaign many messages.
    url = reverse(name, args=["TOKEN"])
    return url[: url.rindex("TOKEN")]


def _prefix(name: str) -> str:
    return settings.SITE_URL + _path_prefix(name)


def click_url(message_id: int, index: int) -> str:
    return f"{_prefix('channels:click')}{_click.sign(f'{message_id}-{index}')}"


def open_url(message_id: int) -> str:
    return f"{_prefix('channels:open')}{_open.sign(str(message_id))}.gif"


def read_click(token: str) -> tuple[int, int] | None:
    try:
        message_id, index = _click.unsign(token).split("-", 1)
        return int(message_id), int(index)
    except (signing.BadSignature, ValueError):
        return None


def read_open(token: str) -> int | None:
    try:
        return int(_open.unsign(token))
    except (signing.BadSignature, ValueError):
        return None
