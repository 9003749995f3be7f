"""The public pages as a person on a phone uses them: headless Debian Chromium via Playwright."""

import re

import pytest
from django.core import mail
from playwright.sync_api import sync_playwright

from compliance import messaging, services
from compliance.models import ConsentEvent, Preference, UnsubscribeFeedback
from segments.models import Contact
from tests.compliance.conftest import make_contact, subscribe

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server, settings):
    settings.SITE_URL = live_server.url
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    yield context.new_page()
    context.close()


def test_unsubscribe_click_through_then_optional_reason(page, shop):
    contact = make_contact(email="phone-user@kedai-customer.jp")
    subscribe(contact)
    page.goto(messaging.unsubscribe_url(contact))
    assert page.locator("h1").inner_text() == "Unsubscribe"
    assert services.consent_status(contact, "email") == "subscribed"  # opening the page changed nothing
    page.click("#unsubscribe-button")
    page.wait_for_selector("#done")
    assert services.consent_status(contact, "email") == "unsubscribed"
    page.check("input[value=too_many]")
    page.click("#feedback-button")
    page.wait_for_selector("text=Thank you")
    assert UnsubscribeFeedback.objects.get(contact=contact).reasons == ["too_many"]


def test_preference_center_click_through(page, shop):
    contact = make_contact(email="prefs@kedai-customer.jp", phone="+60123000111")
    subscribe(contact)
    page.goto(messaging.preferences_url(contact))
    assert page.is_checked("#id_email") and not page.is_checked("#id_sms")
    page.uncheck("input[name=topics][value=promotions]")
    page.check("input[name=frequency][value=weekly]")
    page.check("#id_sms")
    page.click("#save-button")
    page.wait_for_selector("#saved")
    pref = Preference.objects.get(contact=contact)
    assert (sorted(pref.topics), pref.frequency) == (["education", "new_products"], "weekly")
    sms = ConsentEvent.objects.get(contact=contact, channel="sms")
    assert sms.status == "subscribed" and sms.user_agent and "not a condition of purchase" in sms.consent_text.lower()


def test_double_opt_in_sign_up_and_confirmation(page, shop, live_server):
    page.goto(f"{live_server.url}/subscribe/")
    page.fill("#id_email", "doi@kedai-customer.jp")
    page.check("#id_consent")
    page.click("#subscribe-button")
    page.wait_for_selector("#check-inbox")
    contact = Contact.objects.get(email="doi@kedai-customer.jp")
    assert services.consent_status(contact, "email") == "pending"
    link = re.search(r"http://\S+/confirm/\S+/", mail.outbox[-1].body).group(0)
    page.goto(link)
    assert services.consent_status(contact, "email") == "pending"  # the GET alone confirms nothing
    page.click("#confirm-button")
    page.wait_for_selector("#confirmed")
    assert services.consent_status(contact, "email") == "subscribed"
    proof = ConsentEvent.objects.get(contact=contact, status="subscribed")
    assert proof.source == "double_opt_in" and proof.ip == "127.0.0.1" and "Chrome" in proof.user_agent


def test_a_tampered_link_shows_a_clear_page(page, shop, live_server):
    response = page.goto(f"{live_server.url}/u/not-a-real-token/")
    assert response.status == 400
    assert page.locator("h1").inner_text() == "This link is not valid"
