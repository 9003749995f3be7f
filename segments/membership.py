"""Keeping segment membership current: full rebuilds, incremental updates, entered/exited events.

Services other code calls:
- segment_refresh(segment=..., contact_ids=None): one segment, all contacts or just these.
- segment_refresh_for_contacts(contact_ids=..., changed=None): after an order, contact, tag or consent
  change, re-evaluate every segment the change can affect, for those contacts only.
- segment_refresh_all(): the scheduled full rebuild (time windows move even when nothing happens).

A refresh is set-based: exits are one UPDATE over current members the rule no longer selects; entries are
one INSERT ... SELECT of the compiled rule query minus current members. Only the diff comes back to Python,
to write segment_entered / segment_exited events (and send events_ingested for them after commit).

The first full evaluation after the rules change is a silent baseline: membership is recorded, but no
entered/exited events are emitted, so editing a definition does not push everyone into flows (Klaviyo does
the same for definition edits).
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from segments import rules as rule_engine
from segments.models import Contact, Event, EventType, Segment, SegmentMembership
from segments.signals import events_ingested

log = logging.getLogger(__name__)
CHUNK = 2000  # ids per IN list; an incremental query may repeat the list a few times
SEGMENT_EVENT_TYPES = (EventType.SEGMENT_ENTERED, EventType.SEGMENT_EXITED)


@dataclass
class RefreshResult:
    segment_id: int
    entered: list[int]
    exited: list[int]
    seconds: float
    event_ids: list[int]


def segment_queryset(rules: dict, ctx: rule_engine.Context | None = None) -> QuerySet[Contact]:
    """The contacts a rule selects now: one SQL query."""
    return Contact.objects.filter(rule_engine.to_q(rules, ctx or rule_engine.Context()))


def segment_preview_count(rules: dict) -> int:
    return segment_queryset(rules).count()


def segment_matches(*, segment: Segment, contact: Contact, ctx: rule_engine.Context | None = None) -> bool:
    """Python evaluation for one contact (trigger checks); agrees with the SQL (tests/segments/test_property)."""
    ctx = ctx or rule_engine.Context()
    return rule_engine.matches(segment.rules, rule_engine.Facts(contact, ctx))


def _insert_entries(segment: Segment, entered_qs: QuerySet, now: datetime) -> list[int]:
    """INSERT ... SELECT the new members; returns their contact ids (RETURNING: PostgreSQL, SQLite >= 3.35)."""
    try:
        sql, params = entered_qs.annotate(member_id=F("pk")).values("member_id").query.sql_with_params()
    except EmptyResultSet:  # the rule can select nobody (e.g. "top 10%" of a shop without customers)
        return []
    table = SegmentMembership._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{table}" ("segment_id", "contact_id", "entered_at") '  # noqa: S608 (our own SQL)
            f'SELECT %s, "sub"."member_id", %s FROM ({sql}) "sub" RETURNING "contact_id"',
            (segment.pk, connection.ops.adapt_datetimefield_value(now), *params),
        )
        return [row[0] for row in cursor.fetchall()]


def _close_stays(leaving: QuerySet, now: datetime) -> list[int]:
    """UPDATE ... RETURNING: end the stays of members the rule no longer selects, in one statement."""
    try:
        sql, params = leaving.annotate(stay_id=F("pk")).values("stay_id").query.sql_with_params()
    except EmptyResultSet:
        return []
    table = SegmentMembership._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" SET "exited_at" = %s WHERE "id" IN (SELECT "leaving"."stay_id" FROM ({sql}) "leaving") '  # noqa: S608
            'RETURNING "contact_id"',
            (connection.ops.adapt_datetimefield_value(now), *params),
        )
        return [row[0] for row in cursor.fetchall()]


def _emit(segment: Segment, entered: list[int], exited: list[int], now: datetime) -> list[int]:
    props = {"segment": segment.pk, "name": segment.name}
    rows = [Event(contact_id=c, type=EventType.SEGMENT_ENTERED, properties=props, occurred_at=now, received_at=now,
                  source="segments") for c in entered]
    rows += [Event(contact_id=c, type=EventType.SEGMENT_EXITED, properties=props, occurred_at=now, received_at=now,
                   source="segments") for c in exited]
    created = Event.objects.bulk_create(rows, batch_size=2000)
    return [e.pk for e in created]


def _apply(segment: Segment, ctx: rule_engine.Context, scope, now: datetime):
    """One set-based pass: UPDATE the stays the rule no longer selects, INSERT ... SELECT the new ones.

    scope: None (every contact), a list of contact ids, or a values() subquery of contact ids.
    """
    ctx.only = scope
    try:
        rule_qs = segment_queryset(segment.rules, ctx)
    finally:
        ctx.only = None
    current = SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True)
    scoped = current
    if scope is not None:
        rule_qs = rule_qs.filter(pk__in=scope)
        scoped = current.filter(contact_id__in=scope)
    gone = _close_stays(scoped.exclude(contact_id__in=rule_qs.values("pk")), now)
    # The correlated NOT EXISTS probes the (segment, contact) index; the scope is already on the outer query.
    came = _insert_entries(segment, rule_qs.exclude(Exists(current.filter(contact_id=OuterRef("pk")))), now)
    return gone, came


def segment_refresh(*, segment: Segment, contact_ids: Iterable[int] | QuerySet | None = None,
                    ctx: rule_engine.Context | None = None, emit: bool | None = None) -> RefreshResult:
    """Bring the stored membership of one segment in line with its rule.

    contact_ids: None for all contacts; ids; or a values() queryset of contact ids (a subquery, no list).
    """
    started = time.perf_counter()
    ctx = ctx or rule_engine.Context()
    now = ctx.now
    ids = None if contact_ids is None or isinstance(contact_ids, QuerySet) else list(contact_ids)
    with transaction.atomic():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        if emit is None:
            emit = segment.baseline_rules_at == segment.rules_changed_at
        entered: list[int] = []
        exited: list[int] = []
        full = contact_ids is None
        scopes = [None] if full else [contact_ids] if ids is None else [ids[i:i + CHUNK]
                                                                         for i in range(0, len(ids), CHUNK)]
        for chunk in scopes:
            gone, came = _apply(segment, ctx, chunk, now)
            exited += gone
            entered += came
        event_ids = _emit(segment, entered, exited, now) if emit and (entered or exited) else []
        seconds = time.perf_counter() - started
        if full:
            Segment.objects.filter(pk=segment.pk).update(
                member_count=SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True).count(),
                last_full_refresh_at=now, last_full_refresh_seconds=seconds, baseline_rules_at=segment.rules_changed_at)
        elif entered or exited:
            Segment.objects.filter(pk=segment.pk).update(member_count=F("member_count") + len(entered) - len(exited))
        if event_ids:
            transaction.on_commit(lambda: events_ingested.send(sender=Segment, event_ids=event_ids))
    return RefreshResult(segment.pk, entered, exited, seconds, event_ids)


def segment_refresh_all(*, now: datetime | None = None) -> list[RefreshResult]:
    """Full rebuild of every active segment, each in its own transaction; one failing segment is logged."""
    ctx = rule_engine.Context(now)
    results = []
    for segment in Segment.objects.active().order_by("pk"):
        try:
            results.append(segment_refresh(segment=segment, ctx=ctx))
        except rule_engine.RuleError:
            log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
    return results


def segment_refresh_for_contacts(*, contact_ids: Iterable[int], changed: set[str] | None = None,
                                 received_since: datetime | None = None) -> list[RefreshResult]:
    """Incremental update: re-evaluate the segments `changed` can affect, for these contacts only.

    changed: tokens such as {"orders"}, {"contact"}, {"tags"}, {"event:product_viewed"}, {"consent"};
    None means anything may have changed. Segments not yet baselined by a full evaluation are skipped
    (their first full evaluation records them). received_since (when the oldest change arrived) gives
    the lag shown in the admin.
    """
    ids = {i for i in contact_ids if i is not None}
    by_token = {token: ids for token in (changed if changed is not None else {"*"})}
    return _refresh_by_token(by_token, received_since=received_since)


def _refresh_by_token(by_token: dict[str, set[int]], *, received_since: datetime | None,
                      event_range: tuple[int, int] | None = None) -> list[RefreshResult]:
    """Each segment is re-evaluated only for the contacts whose changes it depends on.

    event_range: the new events are (nearly) the ids lo..hi, so a segment that depends on events only is
    scoped with a subquery on them instead of a long list of contact ids.
    """
    ctx = rule_engine.Context()
    results = []
    total = None
    for segment in Segment.objects.active().filter(baseline_rules_at=F("rules_changed_at")).order_by("pk"):
        try:
            deps = rule_engine.depends(segment.rules)
        except rule_engine.RuleError:
            log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
            continue
        relevant = [c for c in by_token if "*" in deps or c == "*" or c in deps]
        wanted = set().union(*(by_token[c] for c in relevant))
        if not wanted:
            continue
        if total is None:
            total = Contact.objects.count()
        # Past a quarter of all contacts, one full pass is cheaper than long IN lists.
        only = None if len(wanted) * 4 > total else sorted(wanted)
        if only and event_range and all(c.startswith("event:") for c in relevant):
            only = Event.objects.filter(pk__range=event_range, type__in=[c[6:] for c in relevant],
                                        contact__isnull=False).values("contact_id")
        try:
            results.append(segment_refresh(segment=segment, contact_ids=only, ctx=ctx, emit=True))
        except rule_engine.RuleError:
            log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
            continue
        done = timezone.now()
        lag = (done - received_since).total_seconds() if received_since else None
        Segment.objects.filter(pk=segment.pk).update(last_incremental_at=done, incremental_lag_seconds=lag)
    return results


def on_events_ingested(sender, event_ids, **kwargs) -> None:
    """events_ingested receiver: the events' contacts, re-evaluated for segments on those event types.

    segment_entered/exited events are skipped here: rules on membership use the "segment" kind, which
    inlines the other rule, and reacting to our own events would only loop back.
    """
    event_ids = list(event_ids)
    rows = list(Event.objects.filter(pk__in=event_ids, contact__isnull=False)
                .exclude(type__in=SEGMENT_EVENT_TYPES).values_list("contact_id", "type", "received_at"))
    if not rows:
        return
    by_token: dict[str, set[int]] = {}
    for contact_id, type_, _received in rows:
        by_token.setdefault(f"event:{type_}", set()).add(contact_id)
    lo, hi = min(event_ids), max(event_ids)
    # A batch stored at once has (nearly) consecutive ids; other events in the range only add re-checks.
    dense = hi - lo + 1 <= 2 * len(event_ids)
    _refresh_by_token(by_token, received_since=min(r[2] for r in rows), event_range=(lo, hi) if dense else None)


def segment_rules_changed(*, segment: Segment) -> RefreshResult:
    """After a definition edit: mark the rules changed and take the silent baseline at once."""
    Segment.objects.filter(pk=segment.pk).update(rules_changed_at=timezone.now())
    segment.refresh_from_db()
    return segment_refresh(segment=segment)
