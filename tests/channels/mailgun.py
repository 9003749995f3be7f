"""Mailgun webhooks as Mailgun documents them, POSTed through anymail's real webhook view."""

import base64
import json
import os

from bench.smtp_sink import mailgun_delivered

SIGNING_KEY = "mailgun-signing-key-for-channel-tests"
WEBHOOK_AUTH = "anymail:channel-tests-secret"


def use_webhooks(client, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_AUTH, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    client.defaults["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(WEBHOOK_AUTH.encode()).decode()
    return client


def post_mailgun(client, *, event: str, recipient: str, message_id: str, user_variables: dict | None = None):
    """A signed Mailgun webhook (the "delivered" sample of Mailgun's docs, with this event name)."""
    payload = mailgun_delivered(message_id=message_id, recipient=recipient, sender="hello@kedai.example",
                                subject="Testing", key=SIGNING_KEY)
    payload["event-data"]["event"] = event
    payload["event-data"]["user-variables"] = user_variables or {}
    if event == "failed":
        payload["event-data"]["severity"] = "permanent"
        payload["event-data"]["reason"] = "bounce"
        payload["event-data"]["delivery-status"].update(code=550, message="5.1.1 mailbox does not exist")
    payload["event-data"]["id"] = os.urandom(8).hex()
    return client.post("/anymail/mailgun/tracking/", data=json.dumps(payload), content_type="application/json")
