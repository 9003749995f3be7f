"""Creating and delivering messages. Every delivery asks compliance.gate.can_send first.

Delivery is at-most-once for marketing and never twice for the same idempotency key:

1. `message_create` makes at most one Message per idempotency key (a unique column), so a
   workflow step or campaign that runs twice finds the message it already made.
2. `messages_send` claims messages with a conditional UPDATE (queued or due -> claimed, stamped
   with this attempt's claim id), so two workers or a redelivered task never hold the same one.
3. Each message is moved claimed -> sending (committed) before the provider call and
   sending -> sent right after it. A worker killed in between leaves it in `sending`; the next
   attempt cannot know whether the provider got it, so a marketing message becomes `unknown`
   (never re-sent: a missed promotion beats a duplicate) and a transactional one is sent again.
4. Transient provider errors defer the message with back-off; permanent ones fail it.
"""

import contextlib
import os
import smtplib
import socket
import uuid
from datetime import timedelta
from email.utils import make_msgid

from django.conf import settings
from django.core.mail import get_connection
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from channels.email import build_email
from channels.models import Message, MessageStatus, Purpose, Template, TemplateVersion
from channels.push import PushError, send_push
from channels.rendering import contact_context, render_string
from channels.sms import SmsError, estimate_cost, send_sms, sms_info, with_opt_out
from compliance import gate
from segments.models import Contact, Event

BACKOFF = [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]


class TransientError(Exception):
    pass


class PermanentError(Exception):
    pass


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


def messages_send(message_ids: list[int]) -> dict[str, int]:
    """Deliver a batch over one connection per channel. Safe to run twice (see module docstring).

    The batch is decided and rendered first; then, message by message, one commit records the
    previous message as sent and this one as sending, right before this one's provider call.
    """
    claim = _new_claim()
    now = timezone.now()
    _claim(message_ids, claim, now)
    batch = list(Message.objects.filter(claim=claim, status=MessageStatus.CLAIMED)
                 .select_related("contact", "template").order_by("pk"))
    counts: dict[str, int] = {}

    def count(status: str) -> None:
        counts[status] = counts.get(status, 0) + 1

    # What the gate needs to know about the whole batch, read once per channel (same rules).
    facts = {channel: gate.gate_facts(contacts=[m.contact for m in batch if m.channel == channel and m.contact],
                                      channel=channel, at=now)
             for channel in {m.channel for m in batch}}
    ready = []
    for message in batch:
        prepared = _decide_and_prepare(message, claim, facts[message.channel])
        if isinstance(prepared, str):
            count(prepared)
        else:
            ready.append(prepared)
    sender = _Sender()
    sent: tuple | None = None
    try:
        for message, payload, extra, decision in ready:
            with transaction.atomic():
                if sent:
                    _record_sent(*sent, claim)
                    sent = None
                holding = _set(message, claim, status=MessageStatus.SENDING, gate_reason=decision.reason, **extra)
            if not holding:
                count("lost-claim")
                continue
            try:
                provider, provider_id = _deliver(message, payload, sender)
            except PermanentError as exc:
                _set(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error=str(exc)[:2000])
                count(MessageStatus.FAILED)
                continue
            except TransientError as exc:
                count(_retry_later(message, claim, str(exc)))
                continue
            sent = (message, provider, provider_id, timezone.now())
            count(MessageStatus.SENT)
    finally:
        if sent:
            with transaction.atomic():
                _record_sent(*sent, claim)
        sender.close()
    return counts


def _record_sent(message: Message, provider: str, provider_id: str, sent_at, claim: str) -> None:
    _set(message, claim, status=MessageStatus.SENT, sent_at=sent_at, provider=provider,
         provider_message_id=provider_id[:200], error="")
    gate.record_sent_many(contact_ids_and_keys=[(message.contact_id, message.idempotency_key)],
                          channel=message.channel, purpose=message.purpose, topic=message.topic or None, at=sent_at)
    if message.channel == "email":
        # Engagement segments ("opened 3 of the last 10 emails") match opens to sends by "message".
        Event.objects.bulk_create([Event(
            contact_id=message.contact_id, type="email_sent", occurred_at=sent_at, received_at=sent_at,
            source="channels", idempotency_key=f"sent:{message.pk}",
            properties={"message": str(message.pk), "template": message.template.name, "origin": message.origin})],
            ignore_conflicts=True)


class _Sender:
    """One email connection for the whole batch, opened on first use."""

    def __init__(self):
        self.connection = None

    def email(self, email) -> None:
        if self.connection is None:
            self.connection = get_connection()
            self.connection.open()
        sent = self.connection.send_messages([email])
        if not sent:
            raise TransientError("the email backend accepted nothing")

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):  # a broken connection is already closed for our purposes
                self.connection.close()
            self.connection = None


def _set(message: Message, claim: str, **fields) -> bool:
    """Move one message on, only while this attempt still holds it (one UPDATE, no ORM query building)."""
    fields["updated_at"] = timezone.now()
    columns, values = [], []
    for name, value in fields.items():
        field = Message._meta.get_field(name)
        columns.append(f"{connection.ops.quote_name(field.column)} = %s")
        values.append(field.get_db_prep_save(value, connection))
    # Names come from the model, values are parameters.
    sql = (f"UPDATE {connection.ops.quote_name(Message._meta.db_table)} SET {', '.join(columns)} "  # noqa: S608
           "WHERE id = %s AND claim = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, message.pk, claim])
        return cursor.rowcount == 1


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
        domain = (settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1] or "localhost").strip(">")
        email.extra_headers["Message-ID"] = make_msgid(idstring=str(message.pk), domain=domain)
        return email, {"links": message.links}
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


def _deliver(message: Message, payload, sender: _Sender) -> tuple[str, str]:
    if message.channel == "email":
        try:
            sender.email(payload)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError(f"recipient refused: {exc.recipients}") from exc
        except smtplib.SMTPResponseException as exc:
            sender.close()
            if 500 <= exc.smtp_code < 600:
                raise PermanentError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise TransientError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            sender.close()
            raise TransientError(f"SMTP: {exc}") from exc
        except Exception as exc:
            raise _classify_anymail(exc) from exc
        status = getattr(payload, "anymail_status", None)
        provider_id = (getattr(status, "message_id", None) if status else None) or payload.extra_headers["Message-ID"]
        return settings.EMAIL_BACKEND.rsplit(".", 2)[-2], str(provider_id)
    if message.channel == "sms":
        try:
            result = send_sms(to=str(message.contact.phone), body=payload,
                              status_callback=settings.CHANNELS["SMS_STATUS_CALLBACK"])
        except SmsError as exc:
            raise (PermanentError if exc.permanent else TransientError)(str(exc)) from exc
        return result.provider, result.provider_message_id
    title, body, url = payload
    try:
        send_push(subscriptions=list(message.contact.push_subscriptions.all()), title=title, body=body, url=url)
    except PushError as exc:
        raise (PermanentError if exc.permanent else TransientError)(str(exc)) from exc
    return "webpush", ""


def _classify_anymail(exc: Exception) -> Exception:
    from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused

    if isinstance(exc, AnymailRecipientsRefused):
        return PermanentError(f"ESP refused the recipient: {exc}")
    if isinstance(exc, AnymailAPIError):
        code = getattr(exc, "status_code", None)
        if code and 400 <= code < 500 and code != 429:
            return PermanentError(f"ESP {code}: {exc}")
        return TransientError(f"ESP: {exc}")
    # Anything else may or may not have reached the provider: never retried (no duplicates).
    return PermanentError(f"unexpected {exc.__class__.__name__}: {exc}")
