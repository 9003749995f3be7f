"""Last line of defence: anymail's pre_send signal drops suppressed recipients from to, cc AND bcc.

The gate decides before a message is built; this guard catches any code path that forgot it (or a
suppression that arrived in between). It reads `message.metadata["purpose"]` ("marketing" when
missing, the safe side): transactional mail is only stopped for hard-bounced or invalid
addresses, marketing for any active suppression. A message left with no recipient is cancelled
(AnymailCancelSend), which anymail reports as not sent rather than as an error.
"""

import logging
from email.utils import getaddresses

from anymail.exceptions import AnymailCancelSend

from compliance.addresses import address_hash
from compliance.models import BLOCKS_TRANSACTIONAL, Suppression

log = logging.getLogger(__name__)
PER_RECIPIENT_ATTRS = ("merge_data", "merge_metadata", "merge_headers")


def _email(entry) -> str:
    return (getaddresses([str(entry)])[0][1] or str(entry)).strip().lower()


def blocked_addresses(addresses: list[str], *, purpose: str) -> set[str]:
    hashes = {address_hash("email", a): a for a in addresses}
    rows = Suppression.objects.active().filter(channel="email", address_hash__in=list(hashes))
    if purpose == "transactional":
        rows = rows.filter(reason__in=list(BLOCKS_TRANSACTIONAL))
    return {hashes[h] for h in rows.values_list("address_hash", flat=True)}


def pre_send_guard(sender, message, esp_name, **kwargs) -> None:
    purpose = (getattr(message, "metadata", None) or {}).get("purpose", "marketing")
    fields = {name: list(getattr(message, name, None) or []) for name in ("to", "cc", "bcc")}
    blocked = blocked_addresses([_email(e) for entries in fields.values() for e in entries], purpose=purpose)
    if not blocked:
        return
    for name, entries in fields.items():
        setattr(message, name, [e for e in entries if _email(e) not in blocked])
    for attr in PER_RECIPIENT_ATTRS:
        per_recipient = getattr(message, attr, None)
        if isinstance(per_recipient, dict):
            setattr(message, attr, {k: v for k, v in per_recipient.items() if _email(k) not in blocked})
    log.warning("pre_send guard dropped %d suppressed recipient(s) from a %s message", len(blocked), purpose)
    if not (message.to or message.cc or message.bcc):
        raise AnymailCancelSend("every recipient is suppressed")
