"""POST /api/v1/events: keys, validation naming the field, partial batches, 413, idempotency."""

import json

import pytest
from django.test import override_settings
from django.utils import timezone

from segments.ingest import api
from segments.ingest.services import store_events
from segments.models import ApiKey, Contact, ContactIdentifier, Event
from segments.signals import events_ingested

pytestmark = pytest.mark.django_db
URL = "/api/v1/events"


@pytest.fixture(autouse=True)
def _no_key_cache():
    api._key_cache.clear()
    yield
    api._key_cache.clear()


@pytest.fixture
def key():
    _row, raw = ApiKey.issue(name="checkout server")
    return raw


def post(client, body, key=None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **headers, **extra)


def test_it_refuses_requests_without_a_valid_key(client, key):
    assert post(client, {"type": "x", "email": "a@example.com"}).status_code == 401
    assert post(client, {"type": "x", "email": "a@example.com"}, key="sk_wrong").status_code == 401


def test_a_revoked_key_stops_working(client):
    row, raw = ApiKey.issue(name="old")
    assert post(client, {"type": "searched", "email": "a@example.com"}, key=raw).status_code == 202
    row.revoke()
    api._key_cache.clear()
    assert post(client, {"type": "searched", "email": "a@example.com"}, key=raw).status_code == 401


def test_keys_are_stored_hashed(key):
    row = ApiKey.objects.get()
    assert key not in (row.key_hash, row.prefix) and row.key_hash != key and key.startswith(row.prefix)


def test_one_event_creates_an_unknown_person_without_consent(client, key, consents, ingested,
                                                             django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = post(client, {"type": "product_viewed", "email": " Nia@Example.com", "occurred_at": "2026-11-01T10:00:00Z",
                          "properties": {"sku": "MUG-1"}}, key=key)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    event = Event.objects.get()
    assert event.contact.email == "nia@example.com" and event.properties == {"sku": "MUG-1"}
    assert event.contact.source == "api"
    assert consents.calls == []
    assert ingested.calls == [{"event_ids": [event.pk], "trigger_flows": True}]


@pytest.mark.parametrize("body, field", [
    ({"email": "a@example.com"}, "type"),
    ({"type": "Bad Type!", "email": "a@example.com"}, "type"),
    ({"type": "searched", "email": "not-an-email"}, "email"),
    ({"type": "searched", "phone": "12345"}, "phone"),
    ({"type": "searched"}, "email"),
    ({"type": "searched", "email": "a@example.com", "occurred_at": "yesterday"}, "occurred_at"),
    ({"type": "searched", "email": "a@example.com", "occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),
    ({"type": "searched", "email": "a@example.com", "properties": [1, 2]}, "properties"),
    ({"type": "searched", "email": "a@example.com", "colour": "red"}, "colour"),
])
def test_a_bad_event_is_a_400_naming_the_field(client, key, body, field):
    r = post(client, body, key=key)
    assert r.status_code == 400
    assert r.json()["field"] == field and r.json()["error"].startswith(field)
    assert Event.objects.count() == 0


def test_a_body_that_is_not_json_is_a_400(client, key):
    r = post(client, b"{not json", key=key)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_a_batch_keeps_the_good_events_and_reports_the_bad_by_index(client, key):
    batch = [{"type": "searched", "email": "a@example.com", "properties": {"q": "mug"}},
             {"type": "searched", "email": "broken"},
             {"type": "product_viewed", "phone": "+60123456789"},
             {"type": "", "email": "c@example.com"}]
    r = post(client, {"batch": batch}, key=key)
    assert r.status_code == 202
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "email"), (3, "type")]
    assert Event.objects.count() == 2 and Contact.objects.filter(phone="+60123456789").exists()


def test_a_batch_with_no_good_event_is_a_400(client, key):
    r = post(client, {"batch": [{"type": "x"}]}, key=key)
    assert r.status_code == 400 and r.json()["errors"][0]["index"] == 0


@override_settings(INGEST_MAX_BODY_BYTES=2000)
def test_an_oversized_body_is_a_413(client, key):
    big = {"batch": [{"type": "searched", "email": f"u{i}@example.com"} for i in range(100)]}
    assert post(client, big, key=key).status_code == 413
    assert Event.objects.count() == 0


@override_settings(INGEST_MAX_BATCH=3)
def test_more_events_than_the_batch_limit_is_a_413(client, key):
    r = post(client, {"batch": [{"type": "searched", "email": "a@example.com"}] * 4}, key=key)
    assert r.status_code == 413 and r.json()["field"] == "batch"


def test_the_idempotency_key_is_honoured_within_and_across_requests(client, key):
    event = {"type": "cart_updated", "email": "a@example.com", "idempotency_key": "cart-1-v3"}
    r = post(client, {"batch": [event, event]}, key=key)
    assert (r.json()["accepted"], r.json()["duplicates"]) == (1, 1)
    r = post(client, event, key=key)
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicates"]) == (0, 1)
    assert Event.objects.filter(idempotency_key="cart-1-v3").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_stores_each_key_once_with_its_fields(client, key):
    """Outside a transaction, as in production: on PostgreSQL batches of 20+ go through COPY."""
    api._key_cache.clear()
    raw = ApiKey.issue(name="batch")[1]
    batch = [{"type": "product_viewed", "email": f"p{n % 7}@example.com", "idempotency_key": f"pv-{n}",
              "occurred_at": f"2026-11-20T10:00:{n:02d}+08:00", "properties": {"n": n, "name": "Teh “tarik”"}}
             for n in range(40)]
    r = post(client, {"batch": batch + batch[:5]}, key=raw)
    assert r.status_code == 202 and (r.json()["accepted"], r.json()["duplicates"]) == (40, 5)
    r = post(client, {"batch": batch[30:] + [{**batch[0], "idempotency_key": "pv-new"}]}, key=raw)
    assert (r.json()["accepted"], r.json()["duplicates"]) == (1, 10)
    assert Event.objects.count() == 41 and Contact.objects.count() == 7
    stored = Event.objects.select_related("contact").get(idempotency_key="pv-12")
    assert stored.properties == {"n": 12, "name": "Teh “tarik”"} and stored.contact.email == "p5@example.com"
    assert stored.occurred_at.isoformat() == "2026-11-20T02:00:12+00:00" and stored.source == "api"


def test_people_are_found_by_email_phone_customer_id_or_anonymous_id(client, key):
    known = Contact.objects.create(email="k@example.com", phone="+60123456700")
    ContactIdentifier.objects.create(contact=known, kind="shop_customer", source="shopify", value="777")
    ContactIdentifier.objects.create(contact=known, kind="anonymous", source="tracker", value="anon-1")
    batch = [{"type": "searched", "email": "K@example.com"}, {"type": "searched", "phone": "+60123456700"},
             {"type": "searched", "customer_id": 777, "customer_source": "shopify"},
             {"type": "searched", "anonymous_id": "anon-1"},
             {"type": "searched", "phone": "012-345 6700", "country": "MY"}]
    assert post(client, {"batch": batch}, key=key).json()["accepted"] == 5
    assert set(Event.objects.values_list("contact_id", flat=True)) == {known.pk}
    assert Contact.objects.count() == 1


def test_an_anonymous_visitor_is_kept_anonymous_then_merged_when_identified(client, key):
    post(client, {"type": "product_viewed", "anonymous_id": "v-9"}, key=key)
    assert Event.objects.get().contact is None
    post(client, {"type": "searched", "anonymous_id": "v-9", "email": "v9@example.com"}, key=key)
    contact = Contact.objects.get(email="v9@example.com")
    assert set(Event.objects.values_list("contact_id", flat=True)) == {contact.pk}


def test_a_page_view_racing_the_visitors_identify_is_still_attributed(django_capture_on_commit_callbacks):
    """The page view resolved its anonymous id before the identify request stored it, and the
    identify merged the history before the page view was committed: the event still ends up
    with the contact, before anyone is told about it."""
    contact = Contact.objects.create(email="racer@example.com")
    in_flight = Event(type="product_viewed", anonymous_id="v-race", source="tracker", contact_id=None,
                      occurred_at=timezone.now(), received_at=timezone.now())
    # The identify request lands first: identifier stored, (still empty) anonymous history merged.
    ContactIdentifier.objects.create(contact=contact, kind="anonymous", source="tracker", value="v-race")
    seen = []
    handler = lambda sender, event_ids, **kw: seen.extend(  # noqa: E731
        Event.objects.filter(pk__in=event_ids).values_list("contact_id", flat=True))
    events_ingested.connect(handler)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            ids, _ = store_events([in_flight])
    finally:
        events_ingested.disconnect(handler)
    assert Event.objects.get(pk=ids[0]).contact_id == contact.pk
    assert seen == [contact.pk]


def test_the_openapi_description_is_served(client):
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/api/v1/events" in doc["paths"]
    assert "idempotency_key" in doc["components"]["schemas"]["Event"]["properties"]


def test_the_api_skips_the_middleware_made_for_pages_but_keeps_the_security_headers(client, key):
    response = post(client, {"type": "searched", "email": "a@example.com"}, key=key)
    assert response.status_code == 202
    assert response["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs
    assert "Vary" not in response and "X-Frame-Options" not in response and not response.cookies
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"  # pages keep the full chain


@pytest.mark.django_db
@pytest.mark.parametrize("enabled", [True, False])
def test_a_batch_is_stored_with_the_garbage_collector_paused_and_left_as_it_was(monkeypatch, enabled):
    import gc

    seen = []

    def watching_store(events, **kwargs):
        seen.append(gc.isenabled())
        return store_events(events, **kwargs)

    monkeypatch.setattr(api, "store_events", watching_store)
    (gc.enable if enabled else gc.disable)()
    try:
        result = api.ingest([{"type": "product_viewed", "email": "mei@example.com"}], source="api")
        after = gc.isenabled()
    finally:
        gc.enable()
    assert result["accepted"] == 1 and seen == [False]
    assert after is enabled


def test_a_known_person_named_by_email_costs_one_statement_on_postgresql(client, key, ingested,
                                                                         django_capture_on_commit_callbacks):
    """services.store_event_of_known_email: the look-up and the insert as one statement, with the same
    answers as the general path (accepted, duplicate, announced), and no event stored for nobody."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    known = Contact.objects.create(email="mei@example.com")
    event = {"type": "cart_updated", "email": "MEI@example.com ", "idempotency_key": "cart-9",
             "occurred_at": "2026-11-01T10:00:00Z", "properties": {"value": "12.00"}}
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as ctx:
        first = api.ingest([event], source="api")
    stored = Event.objects.get(idempotency_key="cart-9")
    assert first == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    assert (stored.contact_id, stored.type, stored.properties, stored.source) == (known.pk, "cart_updated",
                                                                                 {"value": "12.00"}, "api")
    assert stored.occurred_at.isoformat() == "2026-11-01T10:00:00+00:00"
    assert ingested.calls == [{"event_ids": [stored.pk], "trigger_flows": True}]
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as again:
        second = api.ingest([event], source="api")
    assert second == {"accepted": 0, "duplicates": 1, "rejected": 0, "errors": []}
    assert Event.objects.filter(idempotency_key="cart-9").count() == 1 and len(ingested.calls) == 1
    if connection.vendor == "postgresql":
        assert len(ctx.captured_queries) == len(again.captured_queries) == 1, ctx.captured_queries
    # Nobody has this email yet: nothing is stored by the one statement, the general path creates the person.
    r = post(client, {"type": "searched", "email": "new@example.com", "idempotency_key": "s-1"}, key=key)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert Event.objects.get(idempotency_key="s-1").contact.email == "new@example.com"
    # Other identifiers to attach: the general path, which attaches them.
    r = post(client, {"type": "searched", "email": "mei@example.com", "customer_id": "c-77", "idempotency_key": "s-2"},
             key=key)
    assert r.json()["accepted"] == 1
    assert ContactIdentifier.objects.filter(contact=known, kind="shop_customer", value="c-77").exists()


@pytest.mark.django_db(transaction=True)
def test_the_api_skips_the_health_check_round_trip_unless_the_connection_looks_dead(client, key):
    """segments.middleware.skip_idle_health_check: an idle connection's socket has nothing to read; one the
    server has ended polls readable, and then Django's own check runs and reconnects."""
    import select
    import time

    from django.db import connection, connections

    from segments.middleware import skip_idle_health_check

    if connection.vendor != "postgresql" or not connection.health_check_enabled:
        pytest.skip("PostgreSQL with CONN_HEALTH_CHECKS (the settings' default there)")
    Contact.objects.create(email="alive@example.com")
    connection.health_check_done = False  # as at the start of a request
    assert skip_idle_health_check() is True and connection.health_check_done
    assert post(client, {"type": "searched", "email": "alive@example.com"}, key=key).status_code == 202

    # The server ends this connection (a restart, an idle timeout): the socket turns readable.
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    finally:
        other.close()
    deadline = time.monotonic() + 5
    while not select.select([connection.connection.fileno()], [], [], 0.05)[0] and time.monotonic() < deadline:
        pass
    connection.health_check_done = False
    assert skip_idle_health_check() is False and not connection.health_check_done
    # The request still goes through: Django's check finds the connection dead and opens a new one.
    r = post(client, {"type": "searched", "email": "alive@example.com", "idempotency_key": "after-restart"}, key=key)
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert Event.objects.filter(idempotency_key="after-restart").count() == 1
