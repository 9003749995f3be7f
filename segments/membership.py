"""Keeping segment membership current: full rebuilds, incremental updates, entered/exited events.

Services other code calls:
- segment_refresh(segment=..., contact_ids=None): one segment, all contacts or just these.
- segment_refresh_for_contacts(contact_ids=..., changed=None): after an order, contact, tag or consent
  change, re-evaluate every segment the change can affect, for those contacts only (segments.incremental,
  re-exported here, as is on_events_ingested, the events_ingested receiver).
- segment_refresh_all(): the scheduled full rebuild (time windows move even when nothing happens).

A full refresh is set-based: exits are one UPDATE over current members the rule no longer selects; entries
are one INSERT ... SELECT of the compiled rule query minus current members. A scoped refresh (some contacts)
reads the rule's answer for those contacts and their current stays, and writes only the difference. Either
way only the diff comes back to Python, to write segment_entered / segment_exited events in one INSERT ...
SELECT (and send events_ingested for them after commit).

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

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
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


def emit_moves(segment: Segment, entered: list[int], exited: list[int], now: datetime) -> list[int]:
    """segment_entered / segment_exited events for the moved contacts: one INSERT ... SELECT, ids returned."""
    return emit_moves_many([(segment, entered, exited)], now)[segment.pk]


def _apply_full(segment: Segment, ctx: rule_engine.Context, now: datetime) -> tuple[list[int], list[int]]:
    """Every contact: UPDATE the stays the rule no longer selects, INSERT ... SELECT the new ones."""
    rule_qs = segment_queryset(segment.rules, ctx)
    current = SegmentMembership.objects.filter(segment=segment, exited_at__isnull=True)
    gone = _close_stays(current.exclude(contact_id__in=rule_qs.values("pk")), now)
    # The correlated NOT EXISTS probes the (segment, contact) index.
    came = _insert_entries(segment, rule_qs.exclude(Exists(current.filter(contact_id=OuterRef("pk")))), now)
    return gone, came


def _rule_sql(segment: Segment, ctx: rule_engine.Context, scope) -> tuple[str, list]:
    """The segment's rule as an SQL condition on the contacts table, compiled once for a few contacts.

    ctx.only = scope: per-contact counts and subqueries cut to those contacts (see segments.rules.kinds).
    A rule that selects nobody (or everybody) compiles to FALSE (TRUE).
    """
    ctx.only = scope
    try:
        query = Contact.objects.filter(rule_engine.to_q(segment.rules, ctx)).query
    finally:
        ctx.only = None
    try:
        sql, params = query.get_compiler(connection=connection).compile(query.where)
    except EmptyResultSet:
        return "FALSE", []
    except FullResultSet:
        return "TRUE", []
    return (f"({sql})" if sql else "TRUE"), list(params)


def _scope_sql(scope) -> tuple[str, list]:
    """A SELECT of the contact ids of `scope`: an IdList (one bound parameter) or a values() queryset."""
    if isinstance(scope, IdList):
        return id_list_sql(scope.ids, connection.vendor)
    sql, params = scope.query.sql_with_params()
    return sql, list(params)


def _moves_sql(segment: Segment, rule: tuple[str, list], scope, direction: int = rule_engine.EITHER) -> tuple[str, list]:
    """SELECT (contact id, member) of the contacts of `scope` whose rule answer differs from their stay.

    direction TRUER: the contacts' answers can only have turned true, so only non-members can move (in),
    and members are not evaluated at all; FALSER: only members can move (out). One CASE decides, the stay
    first. (A NOT EXISTS of its own in the WHERE became an anti-join, planned from the membership table's
    missing statistics as a nested loop over every stay of the segment per contact: 0.7 s instead of 30 ms.)

    Written as SQL around the rule compiled once (rule: see _rule_sql), not as a queryset per part: the
    ORM resolved and compiled the rule's whole expression tree again for each (25 ms of CPU per batch).
    """
    contact = f'"{Contact._meta.db_table}"'
    stay = (f'SELECT 1 FROM "{MEMBERSHIP}" "stay" WHERE "stay"."contact_id" = {contact}."id" '  # noqa: S608
            'AND "stay"."exited_at" IS NULL AND "stay"."segment_id" = %s')
    # The member column, read only for the few rows that move, is a scalar subquery (1 or 0), which
    # PostgreSQL never hashes: an EXISTS may be planned as a hashed read of every current stay of the
    # segment (the membership table has no statistics after a load), ~2.5 ms per 20k members. That pays
    # for a few thousand contacts, not for a few hundred: then the scalar probe tests membership too.
    member = f"COALESCE(({stay} LIMIT 1), 0)"
    few = isinstance(scope, IdList) and len(scope) * 16 < segment.member_count
    is_member = f"{member} = 1" if few else f"EXISTS({stay})"
    scope_sql, scope_params = _scope_sql(scope)
    rule_sql, rule_params = rule
    head = f'SELECT {contact}."id"'
    where = f'FROM {contact} WHERE {contact}."id" IN ({scope_sql}) AND '
    if direction == rule_engine.TRUER:
        return (f"{head}, 0 {where}CASE WHEN {is_member} THEN FALSE WHEN {rule_sql} THEN TRUE ELSE FALSE END",
                [*scope_params, segment.pk, *rule_params])
    if direction == rule_engine.FALSER:
        return (f"{head}, 1 {where}CASE WHEN NOT ({is_member}) THEN FALSE WHEN {rule_sql} THEN FALSE ELSE TRUE END",
                [*scope_params, segment.pk, *rule_params])
    return (f"{head}, {member} {where}(CASE WHEN {rule_sql} THEN TRUE ELSE FALSE END) <> ({is_member})",
            [segment.pk, *scope_params, *rule_params, segment.pk])


def _run_moves(parts: list[tuple[int, str, list]], moves: dict[int, tuple[list[int], list[int]]]) -> None:
    """Run (segment id, moves SQL, params) parts as ONE UNION ALL; add each row to moves[segment]."""
    if not parts:
        return
    sql = " UNION ALL ".join(f'SELECT %s AS "segment", "m".* FROM ({part}) "m"' for _pk, part, _p in parts)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [p for pk, _sql, params in parts for p in (pk, *params)])
        for segment_id, pk, is_member in cursor.fetchall():
            moves[segment_id][1 if is_member else 0].append(pk)


def scoped_moves(segment: Segment, ctx: rule_engine.Context, scope) -> tuple[list[int], list[int]]:
    """(entering, leaving) contacts of `scope` (an IdList or a values() subquery): one query.

    The rule is compiled for a few contacts (correlated counts, see segments.rules.kinds._count_ge) and
    compared with each contact's current stay in SQL, so only the contacts that move come back.
    """
    moves = {segment.pk: ([], [])}
    _run_moves([(segment.pk, *_moves_sql(segment, _rule_sql(segment, ctx, scope), scope))], moves)
    entering, leaving = moves[segment.pk]
    return sorted(entering), sorted(leaving)


def _union(scopes: dict[int, IdList]) -> IdList:
    if len(scopes) == 1:
        return next(iter(scopes.values()))
    return IdList(sorted({pk for scope in scopes.values() for pk in scope.ids}))


def scoped_moves_many(plans: list[tuple[Segment, dict[int, IdList]]],
                      ctx: rule_engine.Context) -> dict[int, tuple[list[int], list[int]]]:
    """scoped_moves for several segments in ONE statement (UNION ALL): {segment id: moves}.

    plans: (segment, {direction: contacts}): the contacts to re-check both ways (EITHER), or only if not
    members (TRUER) or only if members (FALSER); see segments.rules.event_effects.

    One round trip: under load every statement also waits for the database process to be scheduled, so
    ten segments cost one wait instead of ten.
    """
    parts, moves = [], {}
    for segment, scopes in plans:
        moves[segment.pk] = ([], [])
        scopes = {direction: scope for direction, scope in scopes.items() if len(scope)}
        if scopes:
            rule = _rule_sql(segment, ctx, _union(scopes))  # compiled once for all its parts
            parts += [(segment.pk, *_moves_sql(segment, rule, scope, direction)) for direction, scope in scopes.items()]
    _run_moves(parts, moves)
    return {pk: (sorted(entering), sorted(leaving)) for pk, (entering, leaving) in moves.items()}


def pair_list_sql(pairs: list[tuple[int, int]], vendor: str) -> tuple[str, list]:
    """A SELECT of (segment_id, contact_id) pairs bound as one or two parameters (see id_list_sql)."""
    if vendor == "postgresql":
        return ('SELECT * FROM unnest(string_to_array(%s, \',\')::bigint[], string_to_array(%s, \',\')::bigint[]) '
                'AS "pairs" ("segment_id", "contact_id")',
                [",".join(str(int(s)) for s, _c in pairs), ",".join(str(int(c)) for _s, c in pairs)])
    return ('SELECT json_extract("value", \'$[0]\') AS "segment_id", json_extract("value", \'$[1]\') AS "contact_id" '
            'FROM json_each(%s)', [json.dumps([[int(s), int(c)] for s, c in pairs])])


def _stays_sql(contacts: dict[int, list[int]]) -> tuple[str, list]:
    """A condition on the current stays of these contacts in these segments ({segment id: contact ids}).

    PostgreSQL: "segment = s AND contact = ANY(array)" per segment, so each is a probe of the (segment,
    contact) index. A (segment, contact) IN (pairs) semi-join was planned as a hash of every current stay
    of every segment (14 ms for 600 exits among 100k stays), the membership table having no statistics.
    """
    if connection.vendor == "postgresql":
        return (" OR ".join(['("segment_id" = %s AND "contact_id" = ANY(string_to_array(%s, \',\')::bigint[]))']
                            * len(contacts)),
                [p for pk, ids in contacts.items() for p in (pk, ",".join(map(str, map(int, ids))))])
    pairs_sql, pairs_params = pair_list_sql([(pk, c) for pk, ids in contacts.items() for c in ids], connection.vendor)
    return f'("segment_id", "contact_id") IN ({pairs_sql})', pairs_params


def write_moves_many(moves: dict[int, tuple[list[int], list[int]]], now: datetime) -> dict[int, tuple[list, list]]:
    """write_moves for several segments, one UPDATE and one INSERT in all: {segment id: (exited, entered)}."""
    out = {pk: ([], []) for pk in moves}
    leaving = {pk: gone for pk, (_entering, gone) in moves.items() if gone}
    entering = [(pk, c) for pk, (came, _leaving) in moves.items() for c in came]
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        if leaving:
            stays_sql, stays_params = _stays_sql(leaving)
            cursor.execute(
                f'UPDATE "{MEMBERSHIP}" SET "exited_at" = %s WHERE "exited_at" IS NULL '  # noqa: S608 (our own SQL)
                f'AND ({stays_sql}) RETURNING "segment_id", "contact_id"', (at, *stays_params))
            for segment_id, contact_id in cursor.fetchall():
                out[segment_id][0].append(contact_id)
        if entering:
            pairs_sql, pairs_params = pair_list_sql(entering, connection.vendor)
            cursor.execute(
                f'INSERT INTO "{MEMBERSHIP}" ("segment_id", "contact_id", "entered_at") '  # noqa: S608
                f'SELECT "pairs"."segment_id", "pairs"."contact_id", %s FROM ({pairs_sql}) "pairs" '
                'RETURNING "segment_id", "contact_id"',
                (at, *pairs_params))
            for segment_id, contact_id in cursor.fetchall():
                out[segment_id][1].append(contact_id)
    return out


def emit_moves_many(moves: list[tuple[Segment, list[int], list[int]]], now: datetime) -> dict[int, list[int]]:
    """emit_moves for several segments in one INSERT ... SELECT: {segment id: event ids}."""
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    at = connection.ops.adapt_datetimefield_value(now)
    parts, params, out = [], [], {}
    for segment, entered, exited in moves:
        out[segment.pk] = []
        props = json.dumps({"segment": segment.pk, "name": segment.name})
        for type_, ids in ((EventType.SEGMENT_ENTERED, entered), (EventType.SEGMENT_EXITED, exited)):
            if ids:
                ids_sql, ids_params = id_list_sql(ids, connection.vendor)
                parts.append(f"SELECT \"ids\".\"id\", '', %s, %s{cast}, %s, %s, 'segments', '' FROM ({ids_sql}) \"ids\"")  # noqa: S608
                params += [str(type_), props, at, at, *ids_params]
    if not parts:
        return out
    segment_of = ("(\"properties\" ->> 'segment')::bigint" if connection.vendor == "postgresql"
                  else "json_extract(\"properties\", '$.segment')")
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{Event._meta.db_table}" ("contact_id", "anonymous_id", "type", "properties", '  # noqa: S608
            f'"occurred_at", "received_at", "source", "idempotency_key") {" UNION ALL ".join(parts)} '
            f'RETURNING "id", {segment_of}', params)
        for event_id, segment_id in cursor.fetchall():
            out[int(segment_id)].append(event_id)
    return out


def write_moves(segment: Segment, entered: list[int], leaving: list[int], now: datetime) -> tuple[list[int], list[int]]:
    """End the current stays of `leaving` and open stays for `entered` (contact ids): (exited, entered)."""
    gone = []
    if leaving:
        stays_sql, stays_params = _stays_sql({segment.pk: leaving})
        with connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE "{MEMBERSHIP}" SET "exited_at" = %s WHERE "exited_at" IS NULL AND ({stays_sql}) '  # noqa: S608
                'RETURNING "contact_id"', (connection.ops.adapt_datetimefield_value(now), *stays_params))
            gone = [row[0] for row in cursor.fetchall()]
    came = _insert_members(segment, *id_list_sql(entered, connection.vendor), now) if entered else []
    return gone, came


def _apply_scoped(segment: Segment, ctx: rule_engine.Context, scope, now: datetime) -> tuple[list[int], list[int]]:
    """Some contacts: one query for the ones that move (scoped_moves), then writes for them only."""
    return write_moves(segment, *scoped_moves(segment, ctx, scope), now)


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
        event_ids = emit_moves(segment, entered, exited, now) if emit and (entered or exited) else []
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


def segment_rules_changed(*, segment: Segment) -> RefreshResult:
    """After a definition edit: mark the rules changed and take the silent baseline at once."""
    Segment.objects.filter(pk=segment.pk).update(rules_changed_at=timezone.now())
    segment.refresh_from_db()
    return segment_refresh(segment=segment)


def __getattr__(name: str):
    """segment_refresh_for_contacts and on_events_ingested live in segments.incremental (importable from here)."""
    if name in ("segment_refresh_for_contacts", "on_events_ingested"):
        from segments import incremental

        return getattr(incremental, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
