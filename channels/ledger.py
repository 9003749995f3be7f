"""The message ledger's writes during delivery (see channels.services for the semantics).

`Ledger` is one batch's writer: what rendering decided, stored in one transaction; the commit
that marks each message `sending` right before its provider hand-over; the `sent` records in
groups of FLUSH_EVERY (one UPDATE, then the gate's send log and the `email_sent` events);
failures, deferrals with back-off, and `unknown`. `message_settle_sent` is the provider's record
turning a `sending`/`unknown` message into `sent` (channels.receivers calls it).
"""

from datetime import timedelta
from functools import lru_cache

from django.db import connection, transaction
from django.utils import timezone

from channels import outcomes
from channels.models import Message, MessageStatus, Purpose
from compliance import gate
from segments.dbwrite import insert_ignoring_conflicts
from segments.models import Event

BACKOFF = [timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]
FLUSH_EVERY = 50  # sent messages recorded per transaction (a SIGKILL leaves at most this many to settle)


class Ledger:
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
            now = _column("updated_at")[1].get_db_prep_save(timezone.now(), connection)  # one stamp for the batch
            with transaction.atomic(), connection.cursor() as cursor:
                for names, rows in groups.items():
                    sql, _ = _update_sql((*names, "updated_at"))
                    preps = [_column(n)[1].get_db_prep_save for n in names]
                    cursor.executemany(sql, [
                        [*(prep(v, connection) for prep, v in zip(preps, values.values(), strict=True)), now,
                         pk, self.claim] for pk, values in rows])

    def hand_over(self, items: list) -> list[bool]:
        """Commit these messages `sending` (with the sent ones waiting, every FLUSH_EVERY)."""
        if len(items) == 1 and len(self.sent) < FLUSH_EVERY:
            # One message, nothing to flush: the UPDATE is its own transaction, committed when it
            # returns (autocommit). An atomic block around it cost two more round trips on
            # PostgreSQL (BEGIN, COMMIT) and Django's savepoint bookkeeping, for every message.
            return [update_message(items[0][0], self.claim, status=MessageStatus.SENDING)]
        with transaction.atomic():
            if len(self.sent) >= FLUSH_EVERY:
                self._record_sent()
            if len(items) == 1:
                return [update_message(items[0][0], self.claim, status=MessageStatus.SENDING)]
            # A group (one ESP batch call): one UPDATE, and a look at which ones it took only if not all.
            pks = [message.pk for message, _payload in items]
            changed = Message.objects.filter(pk__in=pks, claim=self.claim).update(
                status=MessageStatus.SENDING, updated_at=timezone.now())
            if changed == len(pks):
                return [True] * len(pks)
            held = set(Message.objects.filter(pk__in=pks, claim=self.claim, status=MessageStatus.SENDING)
                       .values_list("pk", flat=True))
            return [pk in held for pk in pks]

    def outcome(self, message: Message, outcome: str, detail: str, provider: str = "") -> None:
        if outcome == outcomes.SENT:
            self.sent.append((message, provider, detail, timezone.now()))
            self.count(MessageStatus.SENT)
        elif outcome == outcomes.LOST:
            self.count("lost-claim")
        elif outcome == outcomes.FAILED:
            update_message(message, self.claim, status=MessageStatus.FAILED,
                 failed_at=timezone.now(), error=detail[:2000])
            self.count(MessageStatus.FAILED)
        elif outcome == outcomes.RETRY or message.purpose != Purpose.MARKETING:
            self.count(_retry_later(message, self.claim, detail))
        else:  # UNCERTAIN: the provider may have it; its record will settle it (message_settle_sent)
            update_message(message, self.claim, expect=MessageStatus.SENDING, status=MessageStatus.UNKNOWN, error=detail[:2000])
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
    insert_ignoring_conflicts(
        Event, ("contact", "type", "occurred_at", "received_at", "source", "idempotency_key", "properties"),
        [(message.contact_id, "email_sent", sent_at, sent_at, "channels", f"sent:{message.pk}",
          {"message": str(message.pk), "template": message.template.name if message.template else "",
           "origin": message.origin})
         for message, sent_at in sent if message.channel == "email" and message.contact_id])


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


def update_message(message: Message, claim: str, *, expect: str | None = None, **fields) -> bool:
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


def _retry_later(message: Message, claim: str, error: str) -> str:
    attempt = message.attempts
    if attempt > len(BACKOFF):
        update_message(message, claim, status=MessageStatus.FAILED, failed_at=timezone.now(), error=f"gave up: {error}"[:2000])
        return MessageStatus.FAILED
    update_message(message, claim, status=MessageStatus.DEFERRED, defer_until=timezone.now() + BACKOFF[attempt - 1],
         error=error[:2000], gate_reason="retry")
    return MessageStatus.DEFERRED
