"""Creating and delivering messages. Every delivery asks compliance.gate.can_send first.

Delivery is at-most-once for marketing and never twice for the same idempotency key:

1. `message_create` makes at most one Message per idempotency key (a unique column), so a
   workflow step or campaign that runs twice finds the message it already made.
2. `messages_send` claims messages with a conditional UPDATE (queued or due -> claimed, stamped
   with this attempt's claim id), so two workers or a redelivered task never hold the same one.
3. Each message is committed `sending` right before the point of no return of its provider call
   (for SMTP: before the "." that ends its DATA; see channels.delivery). Messages the provider
   took are recorded `sent` (with the gate's send log and the `email_sent` event) in one
   transaction per FLUSH_EVERY messages, folded into a `sending` commit. A worker killed in
   between leaves its messages `sending`; the next attempt cannot know whether the provider has
   them, so a marketing message becomes `unknown` (never re-sent: a missed promotion beats a
   duplicate) and a transactional one is sent again.
4. `message_settle_sent`: the provider's own record (an ESP tracking webhook, matched by the
   Message id anymail carries in metadata or by the stable Message-ID header) turns a `sending`
   or `unknown` message into `sent`. So nothing is sent twice, and nothing the provider took is
   missing from the ledger once its record arrives.
5. Transient provider errors defer the message with back-off; permanent ones fail it.
6. `messages_reconcile`: where the provider can be asked about a Message-ID and can say for
   certain that it never took one (CHANNELS["PROVIDER_LOOKUP"]), an `unknown` message it never
   took is queued again (a worker killed after the `sending` commit but before the "." left it
   so), and one it took is settled `sent`. An answer short of certain changes nothing.
"""

import os
import socket
import threading
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from channels import delivery, outcomes, throttle
from channels.email import build_email
from channels.ledger import Ledger, message_settle_sent, update_message
from channels.models import Channel, Message, MessageStatus, Purpose, Template, TemplateVersion
from channels.push import PushError, send_push
from channels.rendering import contact_context, render_string, shared_fragments
from channels.sms import SmsError, estimate_cost, send_sms, sms_info, with_opt_out
from compliance import gate
from segments.models import Contact


def template_save_version(template: Template) -> TemplateVersion:
    """Keep the exact content of every version (called when a template is saved)."""
    latest = template.versions.order_by("-version").first()
    if latest and latest.content == template.content():
        return latest
    version = (latest.version + 1) if latest else 1
    Template.objects.filter(pk=template.pk).update(version=version)
    template.version = version
    return TemplateVersion.objects.create(template=template, version=version, content=template.content())


def message_create(*, contact: Contact, template: Template, idempotency_key: str, origin: str = "",
                   context: dict | None = None, purpose: str | None = None, topic: str | None = None,
                   workflow_step_id: int | None = None) -> tuple[Message, bool]:
    """The one message for this idempotency key: created now, or the one made before."""
    fields = dict(contact=contact, channel=template.channel, template=template, template_version=template.version,
                  purpose=purpose or template.purpose, topic=template.topic if topic is None else topic,
                  origin=origin[:120], context=context or {}, workflow_step_id=workflow_step_id)
    try:
        with transaction.atomic():
            return Message.objects.create(idempotency_key=idempotency_key, **fields), True
    except IntegrityError:
        return Message.objects.get(idempotency_key=idempotency_key), False


def messages_enqueue(message_ids: list[int]) -> None:
    """Hand messages to the worker in batches, once the transaction that made them commits."""
    from django_q.tasks import async_task

    ids = list(message_ids)
    if not ids:
        return
    size = min(throttle.batch_size(channel, settings.CHANNELS["BATCH_SIZE"]) for channel in Channel.values)
    for i in range(0, len(ids), size):
        chunk = ids[i:i + size]
        transaction.on_commit(lambda chunk=chunk: async_task("channels.tasks.send_batch", chunk))


HOST = socket.gethostname()[:60]


def _new_claim() -> str:
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _stale_before(now):
    """Claims older than this belong to a dead attempt wherever it ran: the cluster kills any task
    at `timeout` (and hands it out again only after `retry` > timeout)."""
    return now - timedelta(seconds=settings.Q_CLUSTER["timeout"] + 5)


def _claimer_dead(claim: str, claimed_at, now) -> bool:
    """A claim whose process is gone (same host: checked at once) or older than the timeout."""
    if claimed_at is None or claimed_at < _stale_before(now):
        return True
    host, _, rest = claim.partition(":")
    pid = rest.partition(":")[0]
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(message_ids: list[int], claim: str, now) -> None:
    Message.objects.filter(pk__in=message_ids).filter(
        Q(status=MessageStatus.QUEUED) | Q(status=MessageStatus.DEFERRED, defer_until__lte=now)
    ).update(status=MessageStatus.CLAIMED, claim=claim, claimed_at=now, attempts=F("attempts") + 1)
    held = (Message.objects.filter(pk__in=message_ids, status__in=[MessageStatus.CLAIMED, MessageStatus.SENDING])
            .exclude(claim=claim).values_list("pk", "claim", "claimed_at", "status", "purpose"))
    dead: dict[tuple[str, str, str], list[int]] = {}
    for pk, old, claimed_at, status, purpose in held:
        if _claimer_dead(old, claimed_at, now):
            dead.setdefault((old, status, purpose), []).append(pk)
    for (old, status, purpose), pks in dead.items():
        # Compare-and-set on the old claim: two redeliveries never take over the same message.
        qs = Message.objects.filter(pk__in=pks, claim=old, status=status)
        if status == MessageStatus.SENDING and purpose == Purpose.MARKETING:
            # Interrupted inside the provider call: it may have gone out. Never sent twice.
            # updated_at: from now on its worker is known gone (messages_reconcile's gone_since).
            qs.update(status=MessageStatus.UNKNOWN, updated_at=now,
                      error="The worker stopped during the provider call; not re-sent.")
        else:
            qs.update(status=MessageStatus.CLAIMED, claim=claim, claimed_at=now, attempts=F("attempts") + 1)


def messages_send(message_ids: list[int]) -> dict[str, int]:
    """Deliver a batch over one connection per channel. Safe to run twice (see module docstring).

    The batch is decided and rendered first; then the transport hands messages over, asking the
    ledger to commit each one `sending` right before its point of no return.
    """
    claim = _new_claim()
    now = timezone.now()
    _claim(message_ids, claim, now)
    # By primary key (the claim column has no index: filtering on it alone scanned the whole ledger).
    batch = _load_batch(message_ids, claim)
    ledger = Ledger(claim)
    # What the gate needs to know about the whole batch, read once per channel (same rules).
    facts = {channel: gate.gate_facts(contacts=[m.contact for m in batch if m.channel == channel and m.contact],
                                      channel=channel, at=now)
             for channel in {m.channel for m in batch}}
    ready: dict[str, list] = {}
    with shared_fragments():  # the product block everyone sees is rendered once per batch
        for message in batch:
            prepared = _decide_and_prepare(message, claim, facts[message.channel])
            if isinstance(prepared, str):
                ledger.count(prepared)
            else:
                ledger.prepared(message, {"gate_reason": prepared[3].reason, **prepared[2]})
                ready.setdefault(message.channel, []).append(prepared)
    ledger.store_prepared()
    try:
        if ready.get("email"):
            _deliver_email([(m, payload) for m, payload, _extra, _decision in ready["email"]], ledger)
        for channel in ("sms", "push"):
            hand_over = throttle.Pacer(channel, len(ready.get(channel, []))).paced(ledger.hand_over)
            for message, payload, _extra, _decision in ready.get(channel, []):
                if hand_over([(message, payload)])[0]:
                    ledger.outcome(message, *_deliver_other(message, payload))
                else:
                    ledger.count("lost-claim")
    finally:
        ledger.flush()
    return ledger.counts


MIN_PER_STREAM = 20  # fewer emails than this per extra connection: not worth a thread and a connection


def _email_streams(count: int) -> int:
    """How many connections deliver this batch's emails at once (CHANNELS["SEND_STREAMS"]).

    One on SQLite (a single writer: a second connection would only wait for the lock), inside
    a transaction (another connection would not see this attempt's uncommitted claim, and would
    wait on its row locks), and for ESP batch sending (one API call already carries the batch:
    split in two it made twice the calls, B4's ESP rate fell from 1,042 to 917 recipients/s).
    """
    if connection.vendor == "sqlite" or connection.in_atomic_block or not delivery.sends_one_per_call():
        return 1
    return max(1, min(settings.CHANNELS["SEND_STREAMS"], count // MIN_PER_STREAM))


def _deliver_email(items: list, ledger: Ledger) -> None:
    """The batch's emails over one connection, or split over several that send at the same time.

    Each stream is the whole protocol on its own: its transport, its ledger (same claim), its
    share of the rate limit's slots, so every message is still committed `sending` right before
    its own point of no return. The extra streams run in threads with their own database
    connection, closed when they end; their counts join the batch's.
    """
    streams = _email_streams(len(items))
    if streams == 1:
        _deliver_stream(items, ledger)
        return
    size = -(-len(items) // streams)
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    others = [_StreamThread(chunk, Ledger(ledger.claim)) for chunk in chunks[1:]]
    for thread in others:
        thread.start()
    try:
        _deliver_stream(chunks[0], ledger)
    finally:
        for thread in others:
            thread.join()
            for status, n in thread.ledger.counts.items():
                ledger.counts[status] = ledger.counts.get(status, 0) + n
    errors = [thread.error for thread in others if thread.error is not None]
    if errors:
        raise errors[0]


def _deliver_stream(items: list, ledger: Ledger) -> None:
    transport = delivery.open_email_transport()
    hand_over = throttle.Pacer("email", len(items)).paced(ledger.hand_over)
    try:
        for (message, _email), outcome, detail in transport.deliver(items, hand_over):
            ledger.outcome(message, outcome, detail, transport.provider)
    finally:
        transport.close()


class _StreamThread(threading.Thread):
    """One extra email stream: delivers, records its sent messages, closes its database connection."""

    def __init__(self, items: list, ledger: Ledger):
        super().__init__(name="email-stream", daemon=True)
        self.items, self.ledger, self.error = items, ledger, None

    def run(self) -> None:
        try:
            try:
                _deliver_stream(self.items, self.ledger)
            finally:
                self.ledger.flush()
        except BaseException as exc:  # re-raised by the batch's thread
            self.error = exc
        finally:
            connection.close()


def messages_reconcile(lookup=None, limit: int = 5_000) -> list[int]:
    """Ask the provider about `unknown` email: settle what it took, queue again what it never took.

    `lookup(message_ids, gone_since)` answers each Message-ID "accepted", "absent" or anything
    else (not known yet). "absent" must be final: nothing still in flight can make the provider
    take that message later, given that every client that may have been sending it was gone by
    `gone_since` (an SMTP relay: no mail transaction begun before then is still open). Only then
    is the message queued again, with a compare-and-set on `unknown` (never twice). Returns the
    ids queued again (the caller hands them to a worker: send_due does, via messages_enqueue).
    """
    lookup = lookup or _configured_lookup()
    if lookup is None:
        return []
    unknown = list(Message.objects.filter(channel=Channel.EMAIL, status=MessageStatus.UNKNOWN)
                   .exclude(provider_message_id="").select_related("template").order_by("pk")[:limit])
    if not unknown:
        return []
    answers = lookup([m.provider_message_id for m in unknown], max(m.updated_at for m in unknown))
    again = []
    for message in unknown:
        answer = answers.get(message.provider_message_id)
        if answer == "accepted":
            message_settle_sent(message)
        elif answer == "absent" and Message.objects.filter(pk=message.pk, status=MessageStatus.UNKNOWN).update(
                status=MessageStatus.QUEUED, claim="", error="", updated_at=timezone.now()):
            again.append(message.pk)
    return again


def _configured_lookup():
    from django.utils.module_loading import import_string

    path = settings.CHANNELS.get("PROVIDER_LOOKUP")
    return import_string(path) if path else None


# Contact columns no send reads (the phone only SMS and push do): loading them cost more than the
# rest of the row (a PhoneNumber is parsed per contact). tests/channels/test_email_delivery.py
# checks a batch's SELECTs do not grow with its size, so a deferred column read is caught.
_CONTACT_UNREAD = ("contact__phone", "contact__average_order_value", "contact__first_order_at",
                   "contact__last_order_at", "contact__last_activity_at", "contact__source", "contact__updated_at")


def _load_batch(message_ids: list[int], claim: str) -> list[Message]:
    """This attempt's claimed messages with their contacts; each template read once, not per row."""
    batch = list(Message.objects.filter(pk__in=message_ids, claim=claim, status=MessageStatus.CLAIMED)
                 .select_related("contact").defer(*_CONTACT_UNREAD).order_by("pk"))
    templates = Template.objects.in_bulk({m.template_id for m in batch if m.template_id is not None})
    for message in batch:
        message.template = templates.get(message.template_id)
    others = [m.contact for m in batch if m.contact is not None and m.channel != "email"]
    if others:
        phones = dict(Contact.objects.filter(pk__in={c.pk for c in others}).values_list("pk", "phone"))
        for contact in others:
            contact.phone = phones.get(contact.pk)
    return batch


def _decide_and_prepare(message: Message, claim: str, facts: gate.GateFacts):
    """Ask the gate and render; returns (message, payload, fields, decision) or the final status."""
    contact = message.contact
    if contact is None or message.template is None:
        update_message(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error="contact or template deleted")
        return MessageStatus.FAILED
    decision = gate.can_send(contact=contact, channel=message.channel, purpose=message.purpose,
                             topic=message.topic or None, facts=facts)
    if not decision.allowed:
        status = MessageStatus.DEFERRED if decision.defer_until else MessageStatus.REFUSED
        update_message(message, claim, status=status, gate_reason=decision.reason, defer_until=decision.defer_until)
        gate.record_refused(decision, message_key=message.idempotency_key)
        return status
    try:
        payload, extra = _prepare(message)
    except Exception as exc:  # a template error is the author's to fix, not a reason to retry
        update_message(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error=f"render: {exc}"[:2000])
        return MessageStatus.FAILED
    if message.purpose == Purpose.MARKETING:
        facts.note_sent(contact, facts.at)  # a second message to this person in the batch meets the cap
    return message, payload, extra, decision


def _prepare(message: Message) -> tuple[object, dict]:
    """Render the payload for the channel; returns it and fields to store on the message."""
    template, contact = message.template, message.contact
    key = (template.pk, message.template_version or template.version)
    if message.channel == "email":
        email = build_email(message)
        # Known before the hand-over: a provider record citing the Message-ID finds this message.
        return email, {"links": message.links, "provider_message_id": email.extra_headers["Message-ID"]}
    from channels.preview import render_contact

    context = contact_context(render_contact(message), message.context)
    if message.channel == "sms":
        body = render_string(template.sms_body, context, key=(*key, "sms"), autoescape=False).strip()
        if message.purpose == Purpose.MARKETING:
            body = with_opt_out(body)
        info = sms_info(body)
        cost, currency = estimate_cost(str(contact.phone), info.segments)
        return body, {"sms_segments": info.segments, "cost": cost, "cost_currency": currency}
    title = render_string(template.push_title, context, key=(*key, "push_title"), autoescape=False).strip()
    body = render_string(template.push_body, context, key=(*key, "push_body"), autoescape=False).strip()
    return (title, body, template.push_url), {}


def _deliver_other(message: Message, payload) -> tuple[str, str, str]:
    """SMS and push, one provider call per message: (outcome, detail, provider)."""
    if message.channel == "sms":
        try:
            result = send_sms(to=str(message.contact.phone), body=payload,
                              status_callback=settings.CHANNELS["SMS_STATUS_CALLBACK"])
        except SmsError as exc:
            return (outcomes.FAILED if exc.permanent else outcomes.RETRY), str(exc), ""
        return outcomes.SENT, result.provider_message_id, result.provider
    title, body, url = payload
    try:
        send_push(subscriptions=list(message.contact.push_subscriptions.all()), title=title, body=body, url=url)
    except PushError as exc:
        return (outcomes.FAILED if exc.permanent else outcomes.RETRY), str(exc), ""
    return outcomes.SENT, "", "webpush"
