"""Web push with VAPID (pywebpush). Only channels.services (after compliance.gate.can_send) calls send_push()."""

import json

from django.conf import settings
from django.utils import timezone

from channels.models import PushSubscription
from compliance import services as compliance
from compliance.models import ConsentSource

PERMISSION_TEXT = "The browser's permission prompt for notifications from this shop was accepted."


def subscription_save(*, contact, endpoint: str, p256dh: str, auth: str, user_agent: str = "",
                      ip: str | None = None) -> PushSubscription:
    """Store a browser subscription; granting the browser's permission is the person's consent to push."""
    subscription, _ = PushSubscription.objects.update_or_create(
        endpoint=endpoint, defaults={"contact": contact, "p256dh": p256dh, "auth": auth, "user_agent": user_agent[:300]})
    compliance.consent_record(contact=contact, channel="push", status="subscribed", source=ConsentSource.FORM,
                              consent_text=PERMISSION_TEXT, ip=ip, user_agent=user_agent,
                              proof={"endpoint_host": endpoint.split("/")[2]})
    return subscription


def _forget(sub: PushSubscription) -> None:
    """The push service says this browser is gone; with no browser left, there is no push consent."""
    contact = sub.contact
    sub.delete()
    if not contact.push_subscriptions.exists():
        compliance.unsubscribe(contact=contact, channel="push", source=ConsentSource.ESP_EVENT,
                               note="every push subscription expired (404/410 from the push service)")


class PushError(Exception):
    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def send_push(*, subscriptions: list[PushSubscription], title: str, body: str, url: str) -> int:
    """Send to each of the contact's browsers; drop subscriptions the push service says are gone.

    Returns how many browsers accepted it. Raises PushError when none did.
    """
    from pywebpush import WebPushException, webpush

    conf = settings.CHANNELS
    payload = json.dumps({"title": title, "body": body, "url": url})
    delivered, errors = 0, []
    for sub in subscriptions:
        try:
            webpush(subscription_info={"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}},
                    data=payload, vapid_private_key=conf["VAPID_PRIVATE_KEY"],
                    vapid_claims={"sub": conf["VAPID_SUBJECT"]}, timeout=10)
        except WebPushException as exc:
            status = getattr(exc.response, "status_code", None)
            if status in (404, 410):  # the browser unsubscribed or the subscription expired
                _forget(sub)
                errors.append(f"{status} gone")
            else:
                errors.append(str(exc)[:200])
            continue
        delivered += 1
        PushSubscription.objects.filter(pk=sub.pk).update(last_success_at=timezone.now())
    if not delivered:
        gone = errors and all(e.endswith("gone") for e in errors)
        raise PushError("; ".join(errors) or "no push subscription", permanent=bool(gone) or not subscriptions)
    return delivered
