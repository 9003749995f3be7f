"""The web endpoints announce stored events coalesced, a fraction of a second after the request."""

import json
import threading
import time

import pytest

from segments import rules as engine
from segments.ingest import api
from segments.ingest.announcer import Announcer, announcer
from segments.membership import segment_refresh
from segments.models import ApiKey, Contact, Event, Segment, SegmentMembership
from segments.signals import events_ingested

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def coalesced(settings):
    settings.INGEST_ANNOUNCE_SECONDS = 0.2
    api._key_cache.clear()
    _row, raw = ApiKey.issue(name="shop")
    yield {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    announcer.stop()  # its thread closes its connection before the test database goes


@pytest.fixture
def received():
    calls: list[dict] = []
    arrived = threading.Event()

    def receiver(sender, event_ids, trigger_flows, **kwargs):
        calls.append({"ids": list(event_ids), "trigger_flows": trigger_flows, "at": time.monotonic()})
        arrived.set()

    events_ingested.connect(receiver, weak=False, dispatch_uid="test-announcer")
    yield calls
    events_ingested.disconnect(dispatch_uid="test-announcer")


def _wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_requests_are_answered_before_and_announced_soon_after_in_one_signal(client, coalesced, received):
    posted = time.monotonic()
    for n in range(5):
        r = client.post("/api/v1/events", json.dumps({"type": "searched", "email": f"s{n}@example.com"}),
                        content_type="application/json", **coalesced)
        assert r.status_code == 202 and r.json()["accepted"] == 1
    assert received == []  # not inside the requests
    stored = set(Event.objects.values_list("pk", flat=True))
    _wait_for(lambda: {i for c in received for i in c["ids"]} == stored)
    assert sorted(i for c in received for i in c["ids"]) == sorted(stored)  # each once
    assert all(c["trigger_flows"] for c in received)
    assert len(received) < 5 and received[-1]["at"] - posted < 2.0


def test_a_segment_on_the_event_type_is_updated_within_a_second(client, coalesced):
    nia = Contact.objects.create(email="nia@example.com")
    segment = Segment.objects.create(name="Carts", rules=engine.validate(
        {"kind": "event_count", "type": "cart_updated", "op": "gte", "value": 1, "days": 7}))
    segment_refresh(segment=segment)  # the baseline: nobody yet
    r = client.post("/api/v1/events", json.dumps({"type": "cart_updated", "email": "nia@example.com"}),
                    content_type="application/json", **coalesced)
    assert r.status_code == 202
    posted = time.monotonic()
    member = SegmentMembership.objects.filter(segment=segment, contact=nia, exited_at__isnull=True)
    _wait_for(member.exists)
    assert member.exists() and time.monotonic() - posted < 1.5
    assert Event.objects.filter(type="segment_entered", contact=nia).exists()


def test_flush_announces_what_is_waiting_in_the_calling_thread(settings, received):
    settings.INGEST_ANNOUNCE_SECONDS = 30  # the thread would wait long; flush (at exit) does not
    own = Announcer()
    own.add([1, 2], trigger_flows=True)
    own.add([3], trigger_flows=False)
    own.flush()
    assert {(tuple(c["ids"]), c["trigger_flows"]) for c in received} == {((1, 2), True), ((3,), False)}
    own.stop()
    assert len(received) == 2


def test_a_failing_receiver_neither_stops_the_others_nor_the_thread(settings, received):
    settings.INGEST_ANNOUNCE_SECONDS = 0.05

    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    events_ingested.connect(broken, weak=False, dispatch_uid="test-broken")
    try:
        own = Announcer()
        own.add([7], trigger_flows=True)
        _wait_for(lambda: len(received) == 1)
        own.add([8], trigger_flows=True)
        _wait_for(lambda: len(received) == 2)
        own.stop()
    finally:
        events_ingested.disconnect(dispatch_uid="test-broken")
    assert [c["ids"] for c in received] == [[7], [8]]


def test_ids_arriving_during_a_send_wait_for_the_next_window(settings, received):
    """One send per window: under load the thread must not announce back to back (a few requests each)."""
    settings.INGEST_ANNOUNCE_SECONDS = 0.3
    own = Announcer()

    def slow(sender, event_ids, **kwargs):
        if event_ids == [1]:
            own.add([2], trigger_flows=True)  # a request answered while the receivers run
            own.add([3], trigger_flows=True)

    events_ingested.connect(slow, weak=False, dispatch_uid="test-slow")
    try:
        own.add([1], trigger_flows=True)
        _wait_for(lambda: len(received) == 2)
        own.stop()
    finally:
        events_ingested.disconnect(dispatch_uid="test-slow")
    assert [c["ids"] for c in received] == [[1], [2, 3]]
    assert received[1]["at"] - received[0]["at"] >= 0.25
