"""Signals through which the shop's data tells higher apps what arrived, without importing them.

consent_stated
    Sent (inside the writer's transaction) when incoming data states a person's marketing
    consent: an import row, an API call, a shop webhook. The compliance app receives it and
    decides what it may record: such a statement can never turn an unsubscribed, complained
    or erased address back into a subscribed one.
    kwargs: contact (segments.Contact), channel ("email" | "sms"),
            state ("subscribed" | "unsubscribed" | "cleaned" | "pending" | "not_subscribed"),
            source ("import" | "api" | "shop_webhook" | "admin" | "form" ...),
            proof (dict: file, row, actor, opt-in time and IP, consent text... whatever is known;
                   proof["key"], when present, names the statement: the same key sent again, e.g. by
                   re-importing the same file, is the same statement and must not be recorded twice),
            occurred_at (aware datetime or None),
            trigger_flows (bool, default True: False for history imports, so a "subscribed" statement
                   is recorded without starting welcome flows).

events_ingested
    Sent after commit with the ids of newly stored events, so segment membership and workflow
    triggers react within seconds. kwargs: event_ids (list[int]),
    trigger_flows (bool: False for history imports; segments still update, flows must not start).
"""

from django.dispatch import Signal

consent_stated = Signal()
events_ingested = Signal()
