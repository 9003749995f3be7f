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
"""

import os
import socket
import uuid
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from channels import delivery
from channels.email import build_email
from channels.models import Message, MessageStatus, Purpose, Template, TemplateVersion
from channels.push import PushError, send_push
from channels.rendering import contact_context, render_string, shared_fragments
from channels.sms import SmsError, estimate_cost, send_sms, sms_info, with_opt_out
from compliance import gate
from segments.models import Contact, Event

BACKOFF = [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]


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

    size = settings.CHANNELS["BATCH_SIZE"]
    ids = list(message_ids)
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
            qs.update(status=MessageStatus.UNKNOWN, error="The worker stopped during the provider call; not re-sent.")
        else:
            qs.update(status=MessageStatus.CLAIMED, claim=claim, claimed_at=now, attempts=F("attempts") + 1)


FLUSH_EVERY = 50  # sent messages recorded per transaction (a SIGKILL leaves at most this many to settle)


def messages_send(message_ids: list[int]) -> dict[str, int]:
    """Deliver a batch over one connection per channel. Safe to run twice (see module docstring).

    The batch is decided and rendered first; then the transport hands messages over, asking the
    ledger to commit each one `sending` right before its point of no return.
    """
    claim = _new_claim()
    now = timezone.now()
    _claim(message_ids, claim, now)
    batch = list(Message.objects.filter(claim=claim, status=MessageStatus.CLAIMED)
                 .select_related("contact", "template").order_by("pk"))
    ledger = _Ledger(claim)
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
            transport = delivery.open_email_transport()
            try:
                for (message, _email), outcome, detail in transport.deliver(
                        [(m, payload) for m, payload, _extra, _decision in ready["email"]], ledger.hand_over):
                    ledger.outcome(message, outcome, detail, transport.provider)
            finally:
                transport.close()
        for channel in ("sms", "push"):
            for message, payload, _extra, _decision in ready.get(channel, []):
                if ledger.hand_over([(message, payload)])[0]:
                    ledger.outcome(message, *_deliver_other(message, payload))
                else:
                    ledger.count("lost-claim")
    finally:
        ledger.flush()
    return ledger.counts


class _Ledger:
    """The batch's writes: `sending` before each hand-over, `sent` in groups, outcomes counted."""

    def __init__(self, claim: str):
        self.claim = claim
        self.counts: dict[str, int] = {}
        self.sent: list[tuple[Message, str, str, object]] = []
        self.fields: dict[int, dict] = {}

    def count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def prepared(self, message: Message, fields: dict) -> None:
        self.fields[message.pk] = fields

    def store_prepared(self) -> None:
        """What rendering decided (gate reason, tracked links, Message-ID, SMS cost), for the whole
        batch in one transaction, so the commit before each hand-over only flips the status."""
        fields, self.fields = self.fields, {}
        groups: dict[tuple, list] = {}  # one executemany per set of columns (one per channel, in practice)
        for pk, values in fields.items():
            groups.setdefault(tuple(values), []).append((pk, values))
        if groups:
            with transaction.atomic(), connection.cursor() as cursor:
                for names, rows in groups.items():
                    sql, _ = _update_sql((*names, "updated_at"))
                    now = timezone.now()
                    cursor.executemany(sql, [
                        [*(_column(n)[1].get_db_prep_save(v, connection) for n, v in (*values.items(), ("updated_at", now))),
                         pk, self.claim] for pk, values in rows])

    def hand_over(self, items: list) -> list[bool]:
        """Commit these messages `sending` (with the sent ones waiting, every FLUSH_EVERY)."""
        with transaction.atomic():
            if len(self.sent) >= FLUSH_EVERY:
                self._record_sent()
            return [_set(message, self.claim, status=MessageStatus.SENDING) for message, _payload in items]

    def outcome(self, message: Message, outcome: str, detail: str, provider: str = "") -> None:
        if outcome == delivery.SENT:
            self.sent.append((message, provider, detail, timezone.now()))
            self.count(MessageStatus.SENT)
        elif outcome == delivery.LOST:
            self.count("lost-claim")
        elif outcome == delivery.FAILED:
            _set(message, self.claim, status=MessageStatus.FAILED,
                 failed_at=timezone.now(), error=detail[:2000])
            self.count(MessageStatus.FAILED)
        elif outcome == delivery.RETRY or message.purpose != Purpose.MARKETING:
            self.count(_retry_later(message, self.claim, detail))
        else:  # UNCERTAIN: the provider may have it; its record will settle it (message_settle_sent)
            _set(message, self.claim, expect=MessageStatus.SENDING, status=MessageStatus.UNKNOWN, error=detail[:2000])
            self.count(MessageStatus.UNKNOWN)

    def flush(self) -> None:
        if self.sent:
            with transaction.atomic():
                self._record_sent()

    def _record_sent(self) -> None:
        """One UPDATE for the waiting sent messages (still `sending` under this claim: a provider
        webhook may have settled one meanwhile), then their send log rows and events."""
        sent, self.sent = self.sent, []
        prep = {name: _column(name)[1] for name in ("sent_at", "updated_at")}
        cases: dict[str, list] = {"sent_at": [], "provider": [], "provider_message_id": []}
        for message, provider, provider_id, sent_at in sent:
            cases["sent_at"] += [message.pk, prep["sent_at"].get_db_prep_save(sent_at, connection)]
            cases["provider"] += [message.pk, provider[:40]]
            cases["provider_message_id"] += [message.pk, provider_id[:200]]
        whens = " ".join(["WHEN %s THEN %s"] * len(sent))
        q = connection.ops.quote_name
        sql = (f"UPDATE {q(Message._meta.db_table)} SET {q('status')} = %s, {q('error')} = '', "  # noqa: S608
               f"{q('updated_at')} = %s, "
               + ", ".join(f"{q(column)} = CASE {q('id')} {whens} END" for column in cases)
               + f" WHERE {q('claim')} = %s AND {q('status')} = %s AND {q('id')} IN ({', '.join(['%s'] * len(sent))})")
        params = [MessageStatus.SENT, prep["updated_at"].get_db_prep_save(timezone.now(), connection),
                  *cases["sent_at"], *cases["provider"], *cases["provider_message_id"],
                  self.claim, MessageStatus.SENDING, *[m.pk for m, *_rest in sent]]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        _record_sent_facts([(message, sent_at) for message, _p, _i, sent_at in sent])


class _Ref:
    def __init__(self, pk: int):
        self.pk = pk


def _record_sent_facts(sent: list[tuple[Message, object]]) -> None:
    """The gate's send log (frequency caps count it) and, for email, the `email_sent` event that
    engagement segments match opens against. Both are idempotent, so a settled message and the
    worker that sent it may both write them."""
    groups: dict[tuple, list] = {}
    for message, sent_at in sent:
        groups.setdefault((message.channel, message.purpose, message.topic or None), []).append((message, sent_at))
    for (channel, purpose, topic), rows in groups.items():
        gate.record_sent_many(contact_ids_and_keys=[(m.contact_id, m.idempotency_key) for m, _at in rows],
                              channel=channel, purpose=purpose, topic=topic, at=max(at for _m, at in rows))
    Event.objects.bulk_create([Event(
        contact_id=message.contact_id, type="email_sent", occurred_at=sent_at, received_at=sent_at,
        source="channels", idempotency_key=f"sent:{message.pk}",
        properties={"message": str(message.pk), "template": message.template.name if message.template else "",
                    "origin": message.origin})
        for message, sent_at in sent if message.channel == "email" and message.contact_id], ignore_conflicts=True)


def message_settle_sent(message: Message, *, at=None, provider: str = "", provider_message_id: str = "") -> bool:
    """The provider's record says it has this message: a send its worker could not record becomes
    `sent` (status, send log, `email_sent` event). Only `sending` and `unknown` messages change."""
    at = at or timezone.now()
    fields = {"status": MessageStatus.SENT, "sent_at": at, "error": ""}
    if provider and not message.provider:
        fields["provider"] = provider[:40]
    if provider_message_id and not message.provider_message_id:
        fields["provider_message_id"] = provider_message_id[:200]
    with transaction.atomic():
        changed = Message.objects.filter(
            pk=message.pk, status__in=[MessageStatus.SENDING, MessageStatus.UNKNOWN]).update(**fields)
        if changed:
            for key, value in fields.items():
                setattr(message, key, value)
            _record_sent_facts([(message, at)])
    return bool(changed)


def _set(message: Message, claim: str, *, expect: str | None = None, **fields) -> bool:
    """Move one message on, only while this attempt still holds it (and, with `expect`, while it is
    still in that status: a provider webhook may have settled it meanwhile). One UPDATE."""
    fields["updated_at"] = timezone.now()
    sql, prep = _update_sql(tuple(fields), expect=bool(expect))
    values = [p(value, connection) for p, value in zip(prep, fields.values(), strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, message.pk, claim, *([expect] if expect else [])])
        return cursor.rowcount == 1


@lru_cache(maxsize=256)
def _update_sql(names: tuple, expect: bool = False) -> tuple[str, list]:
    """UPDATE ... SET these columns WHERE id and claim (and status): built once per set of names."""
    columns = ", ".join(_column(n)[0] for n in names)
    # Names come from the model, values are parameters.
    sql = (f"UPDATE {connection.ops.quote_name(Message._meta.db_table)} SET {columns} "  # noqa: S608
           "WHERE id = %s AND claim = %s" + (" AND status = %s" if expect else ""))
    return sql, [_column(n)[1].get_db_prep_save for n in names]


@lru_cache(maxsize=64)
def _column(name: str):
    field = Message._meta.get_field(name)
    return f"{connection.ops.quote_name(field.column)} = %s", field


def _decide_and_prepare(message: Message, claim: str, facts: gate.GateFacts):
    """Ask the gate and render; returns (message, payload, fields, decision) or the final status."""
    contact = message.contact
    if contact is None or message.template is None:
        _set(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error="contact or template deleted")
        return MessageStatus.FAILED
    decision = gate.can_send(contact=contact, channel=message.channel, purpose=message.purpose,
                             topic=message.topic or None, facts=facts)
    if not decision.allowed:
        status = MessageStatus.DEFERRED if decision.defer_until else MessageStatus.REFUSED
        _set(message, claim, status=status, gate_reason=decision.reason, defer_until=decision.defer_until)
        gate.record_refused(decision, message_key=message.idempotency_key)
        return status
    try:
        payload, extra = _prepare(message)
    except Exception as exc:  # a template error is the author's to fix, not a reason to retry
        _set(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error=f"render: {exc}"[:2000])
        return MessageStatus.FAILED
    if message.purpose == Purpose.MARKETING:
        facts.note_sent(contact, facts.at)  # a second message to this person in the batch meets the cap
    return message, payload, extra, decision


def _retry_later(message: Message, claim: str, error: str) -> str:
    attempt = message.attempts
    if attempt > len(BACKOFF):
        _set(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error=f"gave up: {error}"[:2000])
        return MessageStatus.FAILED
    _set(message, claim, status=MessageStatus.DEFERRED, defer_until=timezone.now() + BACKOFF[attempt - 1],
         error=error[:2000], gate_reason="retry")
    return MessageStatus.DEFERRED


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
            return (delivery.FAILED if exc.permanent else delivery.RETRY), str(exc), ""
        return delivery.SENT, result.provider_message_id, result.provider
    title, body, url = payload
    try:
        send_push(subscriptions=list(message.contact.push_subscriptions.all()), title=title, body=body, url=url)
    except PushError as exc:
        return (delivery.FAILED if exc.permanent else delivery.RETRY), str(exc), ""
    return delivery.SENT, "", "webpush"
