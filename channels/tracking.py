"""Signed click and open tracking: the redirect only ever goes to a URL that was in the message.

Tokens are "<message id>-<link index>:<HMAC>" (django.core.signing.Signer): short, cheap to make
for every link of every message, and impossible to forge without SECRET_KEY.
"""

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.encoding import force_bytes

_click = signing.Signer(salt="channels.click")
_open = signing.Signer(salt="channels.open")


class _Minter:
    """Signer.sign with the derived HMAC key computed once (a message has a dozen links; deriving
    the key per link was most of the cost). Tokens are byte-for-byte Signer's: `unsign` reads them."""

    def __init__(self, signer: signing.Signer):
        if signer.algorithm != "sha256":
            raise ValueError("the minter assumes Signer's sha256")
        key = hashlib.sha256(force_bytes(signer.salt + "signer") + force_bytes(signer.key)).digest()
        self.mac = hmac.new(key, digestmod=hashlib.sha256)
        self.sep = signer.sep

    def sign(self, value: str) -> str:
        mac = self.mac.copy()
        mac.update(value.encode())
        return f"{value}{self.sep}{signing.b64_encode(mac.digest()).decode()}"


_click_minter, _open_minter = _Minter(_click), _Minter(_open)


@lru_cache(maxsize=8)
def _path_prefix(name: str) -> str:
    # reverse() once with a placeholder: a message has many links and a campaign many messages.
    url = reverse(name, args=["TOKEN"])
    return url[: url.rindex("TOKEN")]


def _prefix(name: str) -> str:
    return settings.SITE_URL + _path_prefix(name)


def click_url(message_id: int, index: int) -> str:
    return f"{_prefix('channels:click')}{click_token(message_id, index)}"


def click_prefix() -> str:
    return _prefix("channels:click")


def click_token(message_id: int, index: int) -> str:
    return _click_minter.sign(f"{message_id}-{index}")


def open_url(message_id: int) -> str:
    return f"{_prefix('channels:open')}{_open_minter.sign(str(message_id))}.gif"


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
