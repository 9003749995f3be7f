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

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from segments import rules as rule_engine
from segments.models import Contact, Event, EventType, Segment, SegmentMembership
from segments.rules.sql import IdList, id_list_sql
from segments.signals import events_ingested

log = logging.getLogger(__name__)
MEMBERSHIP = SegmentMembership._meta.db_table
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
    return _insert_members(segment, sql, params, now)


def _insert_members(segment: Segment, sql: str, params, now: datetime) -> list[int]:
    """INSERT the contacts of `sql` (one column) as current members; returns their contact ids."""
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{MEMBERSHIP}" ("segment_id", "contact_id", "entered_at") '  # noqa: S608 (our own SQL)
            f'SELECT %s, "sub".*, %s FROM ({sql}) "sub" RETURNING "contact_id"',
            (segment.pk, connection.ops.adapt_datetimefield_value(now), *params),
        )
        return [row[0] for row in cursor.fetchall()]


def _close_stays(leaving: QuerySet, now: datetime) -> list[int]:
    """UPDATE ... RETURNING: end the stays of members the rule no longer selects, in one statement."""
    try:
        sql, params = leaving.annotate(stay_id=F("pk")).values("stay_id").query.sql_with_params()
    except EmptyResultSet:
        return []
    return _close_stay_ids(sql, params, now)


def _close_stay_ids(sql: str, params, now: datetime) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{MEMBERSHIP}" SET "exited_at" = %s WHERE "id" IN (SELECT "leaving".* FROM ({sql}) "leaving") '  # noqa: S608
            'RETURNING "contact_id"',
            (connection.ops.adapt_datetimefield_value(now), *params),
        )
        return [row[0] for row in cursor.fetchall()]


def _emit(segment: Segment, entered: list[int], exited: list[int], now: datetime) -> list[int]:
    """segment_entered / segment_exited events for the moved contacts: one INSERT ... SELECT, ids returned."""
    props = json.dumps({"segment": segment.pk, "name": segment.name})
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    at = connection.ops.adapt_datetimefield_value(now)
    parts, params = [], []
    for type_, ids in ((EventType.SEGMENT_ENTERED, entered), (EventType.SEGMENT_EXITED, exited)):
        if ids:
            ids_sql, ids_params = id_list_sql(ids, connection.vendor)
            parts.append(f"SELECT \"ids\".\"id\", '', %s, %s{cast}, %s, %s, 'segments', '' FROM ({ids_sql}) \"ids\"")  # noqa: S608
            params += [str(type_), props, at, at, *ids_params]
    if not parts:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{Event._meta.db_table}" ("contact_id", "anonymous_id", "type", "properties", '  # noqa: S608
            f'"occurred_at", "received_at", "source", "idempotency_key") {" UNION ALL ".join(parts)} RETURNING "id"',
            params)
        return [row[0] for row in cursor.fetchall()]


def _apply_full(segment: Segment, ctx: rule_engine.Context, now: datetime) -> tuple[list[int], list[int]]:
    """Every contact: UPDATE the stays the rule no longer selects, INSERT ... SELECT the new ones."""
    rule_qs = segment_queryset(segment.rules, ctx)
    current = SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True)
    gone = _close_stays(current.exclude(contact_id__in=rule_qs.values("pk")), now)
    # The correlated NOT EXISTS probes the (segment, contact) index.
    came = _insert_entries(segment, rule_qs.exclude(Exists(current.filter(contact_id=OuterRef("pk")))), now)
    return gone, came


def _apply_scoped(segment: Segment, ctx: rule_engine.Context, scope, now: datetime) -> tuple[list[int], list[int]]:
    """Some contacts (an IdList or a values() subquery): the rule is evaluated once, over the scope only.

    Two reads (the scope's contacts the rule selects; the scope's current stays), the diff in Python
    (both sides are bounded by the scope), then writes only for the contacts that moved.
    """
    ctx.only = scope
    try:
        rule_qs = segment_queryset(segment.rules, ctx).filter(pk__in=scope)
    finally:
        ctx.only = None
    try:
        hits = set(rule_qs.values_list("pk", flat=True))
    except EmptyResultSet:
        hits = set()
    stays = dict(SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True, contact_id__in=scope)
                 .values_list("contact_id", "pk"))
    entered = sorted(hits.difference(stays))
    leaving = sorted(stays[c] for c in set(stays).difference(hits))
    gone = _close_stay_ids(*id_list_sql(leaving, connection.vendor), now) if leaving else []
    came = _insert_members(segment, *id_list_sql(entered, connection.vendor), now) if entered else []
    return gone, came


def segment_refresh(*, segment: Segment, contact_ids: Iterable[int] | QuerySet | None = None,
                    ctx: rule_engine.Context | None = None, emit: bool | None = None) -> RefreshResult:
    """Bring the stored membership of one segment in line with its rule.

    contact_ids: None for all contacts; ids; or a values() queryset of contact ids (a subquery, no list).
    """
    started = time.perf_counter()
    ctx = ctx or rule_engine.Context()
    now = ctx.now
    full = contact_ids is None
    with transaction.atomic():
        segment = Segment.objects.select_for_update().get(pk=segment.pk)
        if emit is None:
            emit = segment.baseline_rules_at == segment.rules_changed_at
        if full:
            exited, entered = _apply_full(segment, ctx, now)
        else:
            scope = contact_ids if isinstance(contact_ids, QuerySet | IdList) else IdList(contact_ids)
            exited, entered = ([], []) if isinstance(scope, IdList) and not scope.ids else \
                _apply_scoped(segment, ctx, scope, now)
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
                      event_scope: QuerySet | None = None) -> list[RefreshResult]:
    """Each segment is re-evaluated only for the contacts whose changes it depends on.

    All affected segments in one transaction (one commit, each segment in its own savepoint), in id
    order so concurrent refreshes take the segment locks in the same order. event_scope: the new events
    themselves, so a segment that depends on events only is scoped with a subquery on those that can change
    its rule (segments.rules.new_events: types and property filters) instead of a list of contact ids.
    """
    ctx = rule_engine.Context()
    results = []
    total = None
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A few thousand contacts per query: starting parallel workers costs more than they save
            # (cart abandoners for 1,000 contacts: 89 ms with 2 workers, 28 ms without).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
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
            if total is None:  # the id span: as good as a count here, and an index lookup, not a scan
                total = Contact.objects.aggregate(n=Max("pk"))["n"] or 0
            # Past a quarter of all contacts, one full pass is cheaper than probing each of them.
            only = None if len(wanted) * 4 > total else IdList(sorted(wanted))
            if only is not None and event_scope is not None and all(c.startswith("event:") for c in relevant):
                # Only the contacts of the new events that can change this rule (type, and property filters).
                only = event_scope.filter(rule_engine.new_events(segment.rules) or Q(pk__in=[])).values("contact_id")
            try:
                results.append(segment_refresh(segment=segment, contact_ids=only, ctx=ctx, emit=True))
            except rule_engine.RuleError:
                log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
        done = timezone.now()
        lag = (done - received_since).total_seconds() if received_since else None
        Segment.objects.filter(pk__in=[r.segment_id for r in results]).update(last_incremental_at=done,
                                                                              incremental_lag_seconds=lag)
    return results


def on_events_ingested(sender, event_ids, **kwargs) -> None:
    """events_ingested receiver: the events' contacts, re-evaluated for segments on those event types.

    segment_entered/exited events are skipped here: rules on membership use the "segment" kind, which
    inlines the other rule, and reacting to our own events would only loop back.
    """
    if sender is Segment or not event_ids:  # our own segment_entered / segment_exited events
        return
    event_ids = sorted(event_ids)
    lo, hi = event_ids[0], event_ids[-1]
    # A batch stored at once has (nearly) consecutive ids: the id range is then the cheapest filter, and
    # other events in the range only add re-checks. Otherwise the ids go as one array parameter.
    dense = hi - lo + 1 <= 2 * len(event_ids)
    new = Event.objects.filter(pk__range=(lo, hi)) if dense else Event.objects.filter(pk__in=IdList(event_ids))
    new = new.filter(contact__isnull=False).exclude(type__in=SEGMENT_EVENT_TYPES)
    by_token: dict[str, set[int]] = {}
    for contact_id, type_ in new.values_list("contact_id", "type").distinct().iterator(chunk_size=5000):
        by_token.setdefault(f"event:{type_}", set()).add(contact_id)
    if not by_token:
        return
    received_since = new.aggregate(first=Min("received_at"))["first"]
    _refresh_by_token(by_token, received_since=received_since, event_scope=new)


def segment_rules_changed(*, segment: Segment) -> RefreshResult:
    """After a definition edit: mark the rules changed and take the silent baseline at once."""
    Segment.objects.filter(pk=segment.pk).update(rules_changed_at=timezone.now())
    segment.refresh_from_db()
    return segment_refresh(segment=segment)
