"""Incremental membership updates: after new events, orders, contact, tag or consent changes.

- segment_refresh_for_contacts(contact_ids=..., changed=None): re-evaluate every segment the change can
  affect (by change token, see segments.rules.depends), for those contacts only.
- on_events_ingested: the events_ingested receiver; the contacts of the new events, for the segments
  whose rules those events can change (segments.rules.event_effects: event type and property filters),
  all found in one pass over the new events (a flag per segment and direction). A contact whose new
  events can only turn the rule true (a count "at least") is re-checked only if not a member yet; one
  whose events can only turn it false, only if a member.

One batch is one transaction: the segments are locked in id order with one SELECT ... FOR UPDATE. Then a
fixed number of statements however many segments (under load each statement also waits for the database
process to be scheduled): one UNION ALL query evaluates every segment over its own contacts (a constant
list of ids) and returns only those whose answer differs from their stored membership; one UPDATE ends
the stays, one INSERT opens the new ones, one INSERT writes the segment_entered / segment_exited events,
and one UPDATE does the bookkeeping. Past a quarter of all contacts, a segment gets one full pass instead.
Segments not yet baselined by a full evaluation are skipped (their first full evaluation records them).
"""

import logging
import operator
import time
from collections.abc import Iterable
from datetime import datetime
from functools import reduce

from django.db import connection, transaction
from django.db.models import Case, F, IntegerField, Max, Q, Value, When
from django.utils import timezone

from segments import collector
from segments import rules as rule_engine
from segments.membership import (
    SEGMENT_EVENT_TYPES,
    RefreshResult,
    emit_moves_many,
    scoped_moves_many,
    segment_refresh,
    write_moves_many,
)
from segments.models import Contact, Event, Segment
from segments.rules.sql import IdList
from segments.signals import events_ingested

log = logging.getLogger(__name__)


def segment_refresh_for_contacts(*, contact_ids: Iterable[int], changed: set[str] | None = None,
                                 received_since: datetime | None = None) -> list[RefreshResult]:
    """Incremental update: re-evaluate the segments `changed` can affect, for these contacts only.

    changed: tokens such as {"orders"}, {"contact"}, {"tags"}, {"event:product_viewed"}, {"consent"};
    None means anything may have changed. received_since (when the oldest change arrived) gives the lag
    shown in the admin.
    """
    ids = {i for i in contact_ids if i is not None}
    by_token = {token: ids for token in (changed if changed is not None else {"*"})}
    return _refresh_by_token(by_token, received_since=received_since)


def on_events_ingested(sender, event_ids, **kwargs) -> None:
    """events_ingested receiver: the events' contacts, re-evaluated for segments on those event types.

    segment_entered/exited events are skipped here: rules on membership use the "segment" kind, which
    inlines the other rule, and reacting to our own events would only loop back.
    """
    if sender is Segment or not event_ids:  # our own segment_entered / segment_exited events
        return
    with collector.paused():  # see segments.collector: ~20 collections over rule-compilation objects
        _refresh_for_events(sorted(event_ids))


def _refresh_for_events(event_ids: list[int]) -> None:
    """on_events_ingested for the sorted ids of the new events."""
    lo, hi = event_ids[0], event_ids[-1]
    # A batch stored at once has (nearly) consecutive ids: the id range is then the cheapest filter, and
    # other events in the range only add re-checks. Otherwise the ids go as one array parameter.
    dense = hi - lo + 1 <= 2 * len(event_ids)
    new = Event.objects.filter(pk__range=(lo, hi)) if dense else Event.objects.filter(pk__in=IdList(event_ids))
    new = new.filter(contact__isnull=False).exclude(type__in=SEGMENT_EVENT_TYPES)
    # Which segments the new events can change, for which contacts, and which way: ONE pass over the new
    # events, a flag per segment and direction (its rule's event_effects: event types and property filters).
    filters = [(segment, direction, reduce(operator.or_, qs))
               for segment, effects in _baselined_rules(rule_engine.event_effects)
               for direction in DIRECTIONS if (qs := [q for q, d in effects if d == direction])]
    wanted = _contacts_per_filter(new, [q for _s, _d, q in filters]) if filters else []
    found: dict[int, tuple[Segment, dict[int, set[int]]]] = {}
    for (segment, direction, _q), ids in zip(filters, wanted, strict=True):
        if ids:
            found.setdefault(segment.pk, (segment, {}))[1][direction] = ids
    plans = [(segment, _directed(by_direction)) for segment, by_direction in found.values()]
    if plans:
        # The lag counts from the batch's first event (the lowest id, stored first): one index probe, where
        # MIN(received_at) over the batch read all its rows again (4-5 ms for 10,000 events).
        first = Event.objects.filter(pk=lo).values_list("received_at", flat=True).first()
        _refresh_plans(plans, received_since=first)


DIRECTIONS = (rule_engine.EITHER, rule_engine.TRUER, rule_engine.FALSER)


def _directed(by_direction: dict[int, set[int]]) -> dict[int, set[int]]:
    """{direction: contacts} with each contact once: reached by events of both directions, both ways."""
    truer = by_direction.get(rule_engine.TRUER, set())
    falser = by_direction.get(rule_engine.FALSER, set())
    either = by_direction.get(rule_engine.EITHER, set()) | (truer & falser)
    return {rule_engine.EITHER: either, rule_engine.TRUER: truer - either, rule_engine.FALSER: falser - either}


# Flags per mask column: SQL integers are 64-bit signed.
MASK_BITS = 62


def _contacts_per_filter(new, filters: list[Q]) -> list[set[int]]:
    """For each filter, the contacts of the `new` events it selects: ONE pass over the new events.

    Each event row comes back as (contact, bit mask of the filters it passes), not grouped: a GROUP BY
    contact with a MAX(CASE ...) per filter cost SQLite a temporary B-tree (20 ms of CPU for 10,000 events
    instead of 8.5). Plain rows of small ints through the cursor, no per-row converters.

    Filters are not merged even when they look alike: Q(x=1) == Q(x=True) in Python, but not in SQL.
    """
    columns = {}
    for start in range(0, len(filters), MASK_BITS):
        terms = [Case(When(q, then=Value(1 << (bit - start))), default=Value(0), output_field=IntegerField())
                 for bit, q in enumerate(filters[start:start + MASK_BITS], start)]
        columns[f"m{start // MASK_BITS}"] = reduce(operator.add, terms)
    sql, params = new.order_by().annotate(**columns).values_list("contact_id", *columns).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # Contacts by mask first (few distinct masks), then the bits of each mask.
    by_mask: dict[tuple, set[int]] = {}
    for row in rows:
        masks = row[1:]
        if any(masks):
            contacts = by_mask.get(masks)
            if contacts is None:
                by_mask[masks] = {row[0]}
            else:
                contacts.add(row[0])
    per_bit: list[set[int]] = [set() for _ in filters]
    for masks, contacts in by_mask.items():
        for column, mask in enumerate(masks):
            while mask:
                low = mask & -mask
                per_bit[column * MASK_BITS + low.bit_length() - 1] |= contacts
                mask ^= low
    return per_bit


def _baselined() -> list[Segment]:
    """Active segments whose current rules have had their first full evaluation, in id order."""
    return list(Segment.objects.active().filter(baseline_rules_at=F("rules_changed_at")).order_by("pk"))


def _baselined_rules(read):
    """(segment, read(segment.rules)) for each baselined segment; a rule that cannot be read is logged and
    left out, so one broken segment never stops the others' updates."""
    for segment in _baselined():
        try:
            value = read(segment.rules)
        except rule_engine.RuleError:
            log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
            continue
        yield segment, value


def _refresh_by_token(by_token: dict[str, set[int]], *, received_since: datetime | None) -> list[RefreshResult]:
    """Each segment is re-evaluated only for the contacts whose changes it depends on."""
    plans = []
    for segment, deps in _baselined_rules(rule_engine.depends):
        relevant = [c for c in by_token if "*" in deps or c == "*" or c in deps]
        wanted = set().union(*(by_token[c] for c in relevant))
        if wanted:
            plans.append((segment, {rule_engine.EITHER: wanted}))
    return _refresh_plans(plans, received_since=received_since)


def _refresh_plans(plans: list[tuple[Segment, dict[int, set[int]]]], *,
                   received_since: datetime | None) -> list[RefreshResult]:
    """Each segment for its own contacts (past a quarter of all contacts: one full pass), in one transaction.

    plans: (segment, {direction: contact ids}), see membership.scoped_moves_many.
    """
    if not plans:
        return []
    ctx = rule_engine.Context()
    results: list[RefreshResult] = []
    # The id span: as good as a count here, and an index lookup, not a scan.
    total = Contact.objects.aggregate(n=Max("pk"))["n"] or 0
    scoped: list[tuple[Segment, dict[int, IdList]]] = []
    full: list[Segment] = []
    for segment, wanted in plans:
        # Past a quarter of all contacts, one full pass is cheaper than probing each of them.
        if sum(map(len, wanted.values())) * 4 > total:
            full.append(segment)
        else:
            scoped.append((segment, {direction: IdList(sorted(ids)) for direction, ids in wanted.items() if ids}))
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # A few thousand contacts per query: starting parallel workers costs more than they save
            # (cart abandoners for 1,000 contacts: 89 ms with 2 workers, 28 ms without).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        # Every segment of the batch locked at once, in id order: two batches cannot deadlock.
        locked = {s.pk: s for s in Segment.objects.select_for_update().filter(
            pk__in=[s.pk for s in full] + [s.pk for s, _ in scoped]).order_by("pk")}
        for segment in full:
            try:
                results.append(segment_refresh(segment=segment, ctx=ctx, emit=True))
            except rule_engine.RuleError:
                log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
        moved = _refresh_scoped(scoped, ctx, locked)
        results += moved
        done = timezone.now()
        lag = (done - received_since).total_seconds() if received_since else None
        counts = [When(pk=r.segment_id, then=Value(len(r.entered) - len(r.exited))) for r in moved
                  if r.entered or r.exited]
        Segment.objects.filter(pk__in=[r.segment_id for r in results]).update(
            last_incremental_at=done, incremental_lag_seconds=lag,
            **({"member_count": F("member_count") + Case(*counts, default=Value(0))} if counts else {}))
    return results


def _refresh_scoped(plans: list[tuple[Segment, dict[int, IdList]]], ctx: rule_engine.Context,
                    locked: dict[int, Segment]) -> list[RefreshResult]:
    """Several segments, each for its own contacts; the caller updates their member counts.

    Four statements however many segments: who moves (scoped_moves_many), the stays ended, the stays
    opened, and the segment_entered / segment_exited events.
    """
    if not plans:
        return []
    now = ctx.now
    started = time.perf_counter()
    live = []
    for planned, scope in plans:
        segment = locked.get(planned.pk)
        if segment is None or segment.baseline_rules_at != segment.rules_changed_at:
            continue  # deleted, or its rules changed meanwhile: that edit's full evaluation takes over
        live.append((segment, scope))
    moves: dict[int, tuple[list[int], list[int]]] = {}
    ok = []
    try:
        moves = scoped_moves_many(live, ctx)
        ok = live
    except rule_engine.RuleError:  # find the culprit: each segment on its own
        for segment, scopes in live:
            try:
                moves.update(scoped_moves_many([(segment, scopes)], ctx))
                ok.append((segment, scopes))
            except rule_engine.RuleError:
                log.exception("segment %s (%s) could not be evaluated", segment.pk, segment.name)
    written = write_moves_many({s.pk: moves[s.pk] for s, _ in ok}, now)
    event_ids = emit_moves_many([(s, sorted(written[s.pk][1]), sorted(written[s.pk][0])) for s, _ in ok
                                 if written[s.pk][0] or written[s.pk][1]], now)
    seconds = (time.perf_counter() - started) / max(len(ok), 1)  # the batch's time, shared out
    results = [RefreshResult(s.pk, sorted(written[s.pk][1]), sorted(written[s.pk][0]), seconds,
                             event_ids.get(s.pk, [])) for s, _ in ok]
    all_event_ids = [i for r in results for i in r.event_ids]
    if all_event_ids:
        transaction.on_commit(lambda: events_ingested.send(sender=Segment, event_ids=all_event_ids))
    return results
