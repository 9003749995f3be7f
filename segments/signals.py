"""Signals through which the shop's data tells higher apps what arrived, without importing them.

consent_stated
    Sent (inside the writer's transaction) when incoming data states a person's marketing
    consent: an import row, an API call, a shop webhook. The compliance app receives it and
    decides what it may record: such a statement can never turn an unsubscribed, complained
    or erased address back into a subscribed one.
    kwargs: contact (segments.Contact), channel ("email" | "sms"),
            state ("subscribed" | "unsubscribed" | "cleaned" | "pending" | "not_subscribed"),
            source ("import" | "api" | "shop_webhook" | "admin" | "form" ...; the sources that prove
                    the person acted, "double_opt_in", "preference_center" and "sms_keyword", belong to
                    compliance's own pages: a statement naming one is recorded as "api"),
            proof (dict: file, row, actor, opt-in time and IP, consent text... whatever is known;
                   proof["key"], when present, names the statement: the same key sent again, e.g. by
                   re-importing the same file, is the same statement and must not be recorded twice),
            occurred_at (aware datetime or None),
            trigger_flows (bool, default True: False for history imports, so a "subscribed" statement
                   is recorded without starting welcome flows).

consents_stated
    The same for many statements at once (a chunk of an import, a shop customer's channels), so
    the compliance app records them in a handful of queries instead of several per statement.
    Same rules, same outcome as sending consent_stated once per statement in the list's order.
    kwargs: statements (list[StatedConsent]), trigger_flows (bool, as above).

contacts_created
    Sent inside the writer's transaction when contacts are created in bulk, where no post_save
    runs: an import chunk, the events API, shop webhooks and order history naming unknown people.
    kwargs: contacts (list[tuple[int, str | None]]: each new contact's id and its normalised,
    already validated email). The compliance app runs its intake check (fake and role addresses).

events_ingested
    Sent after commit with the ids of newly stored events, so segment membership and workflow
    triggers react within seconds. kwargs: event_ids (list[int]),
    trigger_flows (bool: False for history imports; segments still update, flows must not start).
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.dispatch import Signal


@dataclass(slots=True)
class StatedConsent:
    """One statement of consents_stated: consent_stated's kwargs, with the contact's id."""

    contact_id: int
    channel: str
    state: str
    source: str
    proof: dict = field(default_factory=dict)
    occurred_at: datetime | None = None
    # The sender created this contact in the current transaction: it has no consent rows and no
    # recorded statements yet, so the receiver need not look them up (its suppressions still apply).
    new_contact: bool = False
    # The contact's (email, phone) as the sender just read or wrote them in this transaction (phone
    # in E.164), or None: the receiver then reads them back itself.
    addresses: tuple[str | None, str | None] | None = None


consent_stated = Signal()
consents_stated = Signal()
contacts_created = Signal()
events_ingested = Signal()
