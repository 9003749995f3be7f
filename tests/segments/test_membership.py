import pytest
from django.core.management import call_command
from django.db.models import Exists, OuterRef, Q
from django_q.models import Schedule

from segments import rules as engine
from segments.membership import segment_queryset, segment_refresh, segment_refresh_for_contacts
from segments.models import Contact, Event, Segment, SegmentMembership, Tag
from segments.signals import events_ingested
from tests.segments.conftest import add_event, add_order, refresh_figures

pytestmark = pytest.mark.django_db

CART = {"kind": "did_not_since", "did": "checkout_started", "not_event": "order_placed", "not_order": True, "days": 7}
RECENT = {"kind": "last_order", "op": "within", "days": 30}


def _segment(name: str, rules: dict) -> Segment:
    segment = Segment.objects.create(name=name, rules=engine.validate(rules))
    segment_refresh(segment=segment)  # the silent baseline
    segment.refresh_from_db()
    return segment


def _members(segment: Segment) -> set[int]:
    return set(SegmentMembership.objects.current().filter(segment=segment).values_list("contact_id", flat=True))


def test_first_evaluation_records_members_without_events():
    aiko = Contact.objects.create(email="aiko@example.jp")
    add_event(aiko, "checkout_started", days_ago=1)
    cart = _segment("Cart", CART)
    assert _members(cart) == {aiko.pk} and cart.member_count == 1
    assert cart.last_full_refresh_at is not None
    assert not Event.objects.filter(type__startswith="segment_").exists()


def test_an_order_moves_a_cart_abandoner_to_recent_buyers_with_events(django_capture_on_commit_callbacks):
    aiko = Contact.objects.create(email="aiko@example.jp")
    add_event(aiko, "checkout_started", days_ago=0.1)
    cart, recent = _segment("Cart", CART), _segment("Recent buyers", RECENT)
    received = []
    events_ingested.connect(lambda sender, event_ids, **kw: received.extend(event_ids), weak=False,
                            dispatch_uid="test-received")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            add_order(aiko, days_ago=0, total="40.00")  # the post_save receiver refreshes figures and segments
    finally:
        events_ingested.disconnect(dispatch_uid="test-received")
    assert _members(cart) == set() and _members(recent) == {aiko.pk}
    moves = {(e.type, e.properties["name"]) for e in Event.objects.filter(type__startswith="segment_")}
    assert moves == {("segment_exited", "Cart"), ("segment_entered", "Recent buyers")}
    assert set(received) == set(Event.objects.filter(type__startswith="segment_").values_list("pk", flat=True))
    stay = SegmentMembership.objects.get(segment=cart, contact=aiko)
    assert stay.exited_at is not None  # history kept
    cart.refresh_from_db()
    assert cart.last_incremental_at is not None and cart.member_count == 0


def test_ingested_events_update_only_segments_on_those_event_types():
    siti = Contact.objects.create(email="siti@example.my")
    views = _segment("Viewers", {"kind": "event_count", "type": "product_viewed", "op": "gte", "value": 2, "days": 7})
    tagged = _segment("Tagged", {"kind": "tag", "tag": "vip"})
    Tag.objects.create(name="vip")
    ids = [add_event(siti, "product_viewed").pk for _ in range(2)]
    results = segment_refresh_for_contacts(contact_ids=[siti.pk], changed={"event:product_viewed"})
    assert [r.segment_id for r in results] == [views.pk]
    assert _members(views) == {siti.pk} and _members(tagged) == set()
    Event.objects.filter(type__startswith="segment_").delete()
    events_ingested.send(sender=None, event_ids=ids)  # again: nothing changes, nothing emitted
    assert not Event.objects.filter(type__startswith="segment_").exists()


def test_new_events_find_each_filters_contacts_in_one_pass(monkeypatch):
    """The bit masks per event row give every filter its contacts, across several mask columns too."""
    from segments import incremental

    contacts = [Contact.objects.create(email=f"m{i}@example.com") for i in range(3)]
    events = [add_event(contacts[0], "product_viewed", category="Kitchen"),
              add_event(contacts[1], "product_viewed", category="Garden"),
              add_event(contacts[2], "email_opened"), add_event(contacts[2], "checkout_started")]
    new = Event.objects.filter(pk__in=[e.pk for e in events])
    filters = [Q(type="product_viewed", properties__category="Kitchen"), Q(type="product_viewed"),
               Q(type__in=["email_opened", "checkout_started"]), Q(type="order_placed"), Q(type="email_opened")]
    expected = [set(new.filter(q).values_list("contact_id", flat=True)) for q in filters]
    assert incremental._contacts_per_filter(new, filters) == expected
    monkeypatch.setattr(incremental, "MASK_BITS", 2)  # three mask columns
    assert incremental._contacts_per_filter(new, filters) == expected


def test_re_entering_opens_a_new_stay_and_keeps_the_old_one():
    c = Contact.objects.create(email="re@example.com")
    seg = _segment("Pro", {"kind": "property", "key": "plan", "op": "eq", "value": "pro"})
    for plan in ("pro", "free", "pro"):
        Contact.objects.filter(pk=c.pk).update(properties={"plan": plan})
        segment_refresh_for_contacts(contact_ids=[c.pk], changed={"contact"})
    stays = SegmentMembership.objects.filter(segment=seg, contact=c).order_by("entered_at", "pk")
    assert [s.exited_at is None for s in stays] == [False, True]
    assert Event.objects.filter(type="segment_entered").count() == 2


def test_full_refresh_equals_the_rule_query_and_is_idempotent():
    contacts = [Contact.objects.create(email=f"c{i}@example.com", properties={"n": i}) for i in range(30)]
    for c in contacts[:12]:
        add_order(c, days_ago=c.properties["n"], total="10.00")
    refresh_figures(*contacts)
    seg = _segment("Recent", RECENT)
    expected = set(segment_queryset(seg.rules).values_list("pk", flat=True))
    assert _members(seg) == expected and len(expected) == 12
    again = segment_refresh(segment=seg)
    assert again.entered == [] and again.exited == []


def test_a_segment_can_use_another_segment():
    a, b = Contact.objects.create(email="a@example.com"), Contact.objects.create(email="b@example.com")
    a.tags.add(Tag.objects.create(name="wholesale"))
    wholesale = _segment("Wholesale", {"kind": "tag", "tag": "wholesale"})
    retail = _segment("Retail", {"not": {"kind": "segment", "segment": wholesale.pk}})
    assert _members(retail) == {b.pk}
    assert engine.matches(retail.rules, engine.Facts(b, engine.Context()))


def test_a_kind_registered_by_another_app_is_used_in_sql_python_and_refresh():
    """What compliance does in its AppConfig.ready() for "consent"."""
    def validate(p):
        if p.get("channel") not in ("email", "sms"):
            raise engine.RuleError("channel must be email or sms")
        return {"channel": p["channel"]}

    kind = engine.ConditionKind(
        name="test_reachable", label="Reachable on channel", validate=validate,
        to_q=lambda p, ctx: Q(email__isnull=False) if p["channel"] == "email" else Q(phone__isnull=False),
        matches=lambda p, facts: bool(facts.contact.email if p["channel"] == "email" else facts.contact.phone),
        depends=lambda p: {"consent"},
    )
    engine.register(kind)
    try:
        with pytest.raises(ValueError, match="already registered"):
            engine.register(engine.ConditionKind(name="test_reachable", label="x", validate=validate,
                                                 to_q=kind.to_q, matches=kind.matches))
        with pytest.raises(engine.RuleError, match="channel must be email or sms"):
            engine.validate({"kind": "test_reachable", "channel": "fax"})
        mail = Contact.objects.create(email="m@example.com")
        Contact.objects.create(phone="+60123456789")
        seg = _segment("Emailable", {"kind": "test_reachable", "channel": "email"})
        assert _members(seg) == {mail.pk}
        assert [r.segment_id for r in segment_refresh_for_contacts(contact_ids=[mail.pk], changed={"consent"})] \
            == [seg.pk]
        assert segment_refresh_for_contacts(contact_ids=[mail.pk], changed={"orders"}) == []
    finally:
        engine.unregister("test_reachable")
    with pytest.raises(engine.RuleError, match="unknown condition kind"):
        engine.validate({"kind": "test_reachable", "channel": "email"})


def test_rules_compile_to_one_query(django_assert_num_queries):
    Tag.objects.create(name="x")  # (a tag nobody can have compiles to no query at all)
    rules = engine.validate({"all": [CART, RECENT, {"kind": "tag", "tag": "x"},
                                     {"kind": "engagement", "event": "email_opened", "min": 3, "of_last": 10}]})
    qs = segment_queryset(rules)
    with django_assert_num_queries(1):
        list(qs.values_list("pk", flat=True))


def test_a_tag_that_does_not_exist_selects_nobody_and_its_negation_everybody():
    a = Contact.objects.create(email="a@example.com")
    for rules, expected in (({"kind": "tag", "tag": "ghost"}, set()), ({"not": {"kind": "tag", "tag": "ghost"}}, {a.pk}),
                            ({"any": [{"kind": "tag", "tag": "ghost"}, {"kind": "field", "field": "email",
                                                                        "op": "is_set"}]}, {a.pk})):
        assert set(segment_queryset(rules).values_list("pk", flat=True)) == expected
        assert engine.matches(rules, engine.Facts(a, engine.Context())) == bool(expected)
        assert _members(_segment(f"S{len(Segment.objects.all())}", rules)) == expected


def test_install_segments_is_idempotent_and_stages_are_exclusive(catalog):
    call_command("install_segments")
    n = Segment.objects.count()
    assert Segment.objects.filter(shipped_key="category_kitchen").exists()
    call_command("install_segments")
    assert Segment.objects.count() == n
    buyers = [Contact.objects.create(email=f"b{i}@example.com") for i in range(8)]
    for i, c in enumerate(buyers):
        for k in range(i % 5):
            add_order(c, days_ago=k * 40 + 1, total=f"{10 * (i + 1)}.00", product=catalog["pan"])
    refresh_figures(*buyers)
    call_command("install_segments", "--reset")
    stages = Segment.objects.filter(shipped_key__startswith="stage_")
    in_stage = SegmentMembership.objects.current().filter(segment__in=stages)
    counts = in_stage.values_list("contact_id", flat=True)
    assert len(counts) == len(set(counts)) == 8  # everyone has exactly one stage
    assert Contact.objects.filter(~Exists(in_stage.filter(contact=OuterRef("pk")))).count() == 0


def test_segments_schedules_command_is_idempotent():
    call_command("segments_schedules")
    call_command("segments_schedules")
    assert Schedule.objects.filter(name__startswith="segments:").count() == 3
    assert Schedule.objects.get(name="segments: full membership refresh").minutes == 15


def test_a_segment_whose_stored_rule_no_longer_reads_does_not_stop_the_others(caplog):
    """A rule that fails to read (e.g. a kind whose app was removed) is logged and skipped; the others still move."""
    aiko = Contact.objects.create(email="aiko@example.jp")
    cart = _segment("Cart", CART)
    broken = _segment("Broken", {"kind": "tag", "tag": "vip"})
    Segment.objects.filter(pk=broken.pk).update(rules={"kind": "no_such_kind"})  # as a removed app leaves it
    add_event(aiko, "checkout_started", days_ago=0)
    events_ingested.send(sender=Event, event_ids=list(Event.objects.filter(contact=aiko).values_list("pk", flat=True)))
    assert _members(cart) == {aiko.pk}
    Contact.objects.filter(pk=aiko.pk).update(email="aiko2@example.jp")
    assert [r.segment_id for r in segment_refresh_for_contacts(contact_ids=[aiko.pk])] == [cart.pk]
    assert f"segment {broken.pk} (Broken) could not be evaluated" in caplog.text


def test_new_events_recheck_only_the_contacts_they_can_move(monkeypatch):
    """Events that can only make the rule true re-check non-members only, and the other way round; a
    contact with events of both kinds is re-checked both ways. Under NOT the directions flip."""
    from segments import membership

    rule = {"all": [{"kind": "event_count", "type": "product_viewed", "op": "gte", "value": 2, "days": 7},
                    {"not": CART}]}
    assert [d for _q, d in engine.event_effects(rule)] == [engine.TRUER, engine.FALSER, engine.TRUER]
    viewer, member, both, leaver = (Contact.objects.create(email=f"{n}@example.com") for n in "abcd")
    Contact.objects.bulk_create([Contact(email=f"by{i}@example.com") for i in range(20)])  # the scoped path
    for c in (member, both, leaver):
        add_event(c, "product_viewed", days_ago=1)
        add_event(c, "product_viewed", days_ago=1)
    add_event(viewer, "product_viewed", days_ago=1)
    segment = _segment("Viewers, no open cart", rule)
    assert _members(segment) == {member.pk, both.pk, leaver.pk}
    asked = {}
    real = membership._moves_sql

    def spy(segment, rule, scope, direction=engine.EITHER):
        asked[direction] = set(scope.ids)
        return real(segment, rule, scope, direction)

    monkeypatch.setattr(membership, "_moves_sql", spy)
    ids = [add_event(viewer, "product_viewed").pk, add_event(member, "product_viewed").pk,
           add_event(both, "product_viewed").pk, add_event(both, "checkout_started").pk,
           add_event(leaver, "checkout_started").pk]
    events_ingested.send(sender=None, event_ids=ids)
    assert asked == {engine.TRUER: {viewer.pk, member.pk}, engine.EITHER: {both.pk}, engine.FALSER: {leaver.pk}}
    assert _members(segment) == {viewer.pk, member.pk} == set(segment_queryset(rule).values_list("pk", flat=True))


def test_did_not_since_new_events_move_contacts_both_ways():
    """did X, not Y since: a new X can only bring a contact in (TRUER), a new Y only take one out (FALSER)."""
    assert [d for _q, d in engine.event_effects(CART)] == [engine.TRUER, engine.FALSER]
    leaver, comer = (Contact.objects.create(email=f"{n}@example.com") for n in "ab")
    Contact.objects.bulk_create([Contact(email=f"by{i}@example.com") for i in range(20)])  # the scoped path
    add_event(leaver, "checkout_started", days_ago=1)
    cart = _segment("Cart", CART)
    # Many members, few contacts to re-check: membership is probed per contact (see membership._moves_sql).
    no_cart = _segment("No open cart", {"not": CART})
    assert _members(cart) == {leaver.pk} and len(_members(no_cart)) == 21
    ids = [add_event(leaver, "order_placed").pk, add_event(comer, "checkout_started").pk]
    events_ingested.send(sender=None, event_ids=ids)
    assert _members(cart) == {comer.pk}
    assert _members(no_cart) == set(segment_queryset({"not": CART}).values_list("pk", flat=True))
    assert leaver.pk in _members(no_cart) and comer.pk not in _members(no_cart)


def test_a_batch_of_new_events_runs_without_cyclic_collection_and_restores_it(monkeypatch):
    import gc

    from segments import incremental

    during = []
    monkeypatch.setattr(incremental, "_refresh_for_events", lambda ids: during.append(gc.isenabled()))
    enabled = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            incremental.on_events_ingested(sender=None, event_ids=[1])
            assert gc.isenabled() is state
    finally:
        (gc.enable if enabled else gc.disable)()
    assert during == [False, False]
