"""The storefront tracker in headless Chromium, on a small shop page served by the live server."""

import time

import pytest
from django.db import connections
from playwright.sync_api import sync_playwright

from segments.ingest.tracker import identify_token
from segments.models import Contact, ContactIdentifier, Event

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {check.__doc__ or check}")


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def tracker_settings(settings):
    settings.TRACKER_WRITE_KEY = "pk_live_demo"
    settings.ROOT_URLCONF = "tests.ingest.tracker_urls"


def close_test_connections() -> None:
    """Playwright's sync API runs the test body in its own greenlet, and Django keeps one connection
    per context: close the body's own connection, or PostgreSQL refuses to drop the test database."""
    connections.close_all()


@pytest.mark.browser
@pytest.mark.usefixtures("tracker_settings")
def test_it_tracks_a_visitor_anonymously_then_merges_them_when_they_subscribe(live_server, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/test-shop/product")

    def two_events():
        """the product view and the search"""
        return Event.objects.filter(source="tracker").count() == 2

    wait_for(two_events)
    cookie = next(c for c in context.cookies() if c["name"] == "sm_aid")
    events = list(Event.objects.filter(source="tracker").order_by("type"))
    assert [e.type for e in events] == ["product_viewed", "searched"]
    assert {e.anonymous_id for e in events} == {cookie["value"]} and all(e.contact_id is None for e in events)
    assert events[0].properties == {"product_id": "42", "sku": "MUG-1", "title": "Teh tarik mug", "price": "50.00"}

    page.fill("#email", "Visitor@Example.com")
    page.click("#join")
    page.wait_for_selector("text=thanks")

    def merged():
        """the anonymous history merged into the new contact"""
        c = Contact.objects.filter(email="visitor@example.com").first()
        return c and Event.objects.filter(source="tracker", contact=c).count() == 2 and c

    contact = wait_for(merged)
    assert ContactIdentifier.objects.filter(contact=contact, kind="anonymous", value=cookie["value"]).exists()
    # The same cookie on the next page load: the visitor is recognised, the id is not regenerated.
    page.goto(f"{live_server.url}/test-shop/product")
    wait_for(lambda: Event.objects.filter(source="tracker", contact=contact).count() == 4)
    assert next(c for c in context.cookies() if c["name"] == "sm_aid")["value"] == cookie["value"]
    page.wait_for_load_state("networkidle")
    context.close()
    close_test_connections()


@pytest.mark.browser
@pytest.mark.usefixtures("tracker_settings")
def test_a_tracked_email_link_identifies_the_visitor(live_server, browser):
    known = Contact.objects.create(email="reader@example.com")
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{live_server.url}/test-shop/product?sm_t={identify_token(known)}")

    def attributed():
        """both storefront events attributed to the contact from the email link"""
        return Event.objects.filter(source="tracker", contact=known).count() == 2

    wait_for(attributed)
    page.wait_for_load_state("networkidle")
    context.close()
    close_test_connections()


@pytest.mark.django_db
def test_the_collect_endpoint_refuses_a_wrong_write_key_and_server_side_event_types(client, settings):
    settings.TRACKER_WRITE_KEY = "pk_live_demo"
    r = client.post("/t/collect", data='{"write_key": "nope", "type": "searched", "anonymous_id": "a"}',
                    content_type="text/plain")
    assert r.status_code == 401 and r["Access-Control-Allow-Origin"] == "*"
    r = client.post("/t/collect", data='{"write_key": "pk_live_demo", "type": "order_placed", "anonymous_id": "a"}',
                    content_type="text/plain")
    assert r.status_code == 400 and r.json()["field"] == "type"
    assert Event.objects.count() == 0
