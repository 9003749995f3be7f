import base64
import re
import time
from urllib.parse import quote

import pytest
from django.core import mail, signing
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from compliance import gate, messaging, services, tokens
from compliance.models import ConsentEvent, ConsentSource, Preference, SuppressionReason
from tests.compliance.conftest import make_contact

pytestmark = pytest.mark.django_db

# RFC 8058 §8.3 exactly as printed (boundary parameter malformed, errata 5117), CRLF line ends:
# 124 bytes, the Content-Length the RFC prints.
RFC8058_MULTIPART_AS_PRINTED = (
    b"---FormBoundaryjWmhtjORrn\r\n"
    b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
    b"\r\n"
    b"One-Click\r\n"
    b"---FormBoundaryjWmhtjORrn--"
)
RFC8058_MULTIPART_TYPE_AS_PRINTED = "multipart/form-data; boundary=---FormBoundaryjWmhtjORrn"
# Errata-corrected: boundary parameter "-FormBoundaryjWmhtjORrn", delimiter "--" + boundary.
RFC8058_MULTIPART_TYPE_CORRECTED = "multipart/form-data; boundary=-FormBoundaryjWmhtjORrn"


def one_click_path(contact) -> str:
    header = messaging.list_unsubscribe_headers(contact)["List-Unsubscribe"]
    https = re.findall(r"<(http[^>]+)>", header)
    assert len(https) == 1
    return https[0].removeprefix("http://testserver").removeprefix("http://127.0.0.1:8000")


def mail_client() -> Client:
    """What a mailbox provider sends: no cookies, no CSRF token, no auth."""
    return Client(enforce_csrf_checks=True)


def test_list_unsubscribe_headers_follow_rfc_8058(contact, settings):
    settings.COMPLIANCE = {**settings.COMPLIANCE, "UNSUBSCRIBE_MAILTO": "unsubscribe@kedai.example"}
    settings.SITE_URL = "https://kedai.example"
    h = messaging.list_unsubscribe_headers(contact)
    assert h["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    targets = re.findall(r"<([^>]+)>", h["List-Unsubscribe"])
    assert targets[0].startswith("https://kedai.example/u/") and targets[1].startswith("mailto:unsubscribe@kedai.example?subject=")
    assert targets[0].removeprefix("https://kedai.example") == reverse(
        "compliance:unsubscribe", args=[tokens.unsubscribe_token(contact)])


def test_token_payload_carries_no_address(contact):
    token = tokens.unsubscribe_token(contact)
    payload = base64.urlsafe_b64decode(token.split(":")[0] + "==").decode()
    assert "@" not in payload and "6012" not in payload


@pytest.mark.parametrize("content_type, body", [
    ("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click"),
    (RFC8058_MULTIPART_TYPE_AS_PRINTED, RFC8058_MULTIPART_AS_PRINTED),
    (RFC8058_MULTIPART_TYPE_CORRECTED, RFC8058_MULTIPART_AS_PRINTED),
    ("application/x-www-form-urlencoded", b""),
    ("application/octet-stream", b"\x00\xff garbage \xfe" * 50),
    ("multipart/form-data", b"no boundary at all"),
])
def test_one_click_post_unsubscribes_at_once_with_any_body(contact, content_type, body):
    path = one_click_path(contact)
    response = mail_client().generic("POST", path, data=body, content_type=content_type)
    assert response.status_code == 200
    assert "Location" not in response
    assert services.consent_status(contact, "email") == "unsubscribed"
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "unsubscribed"
    assert ConsentEvent.objects.filter(contact=contact, source=ConsentSource.ONE_CLICK).count() == 1
    again = mail_client().generic("POST", path, data=body, content_type=content_type)
    assert again.status_code == 200
    assert ConsentEvent.objects.filter(contact=contact).count() == 2  # the subscription + one withdrawal


def test_one_click_post_never_redirects_behind_tls_and_append_slash(contact, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.APPEND_SLASH = True
    response = mail_client().post(one_click_path(contact), data=b"List-Unsubscribe=One-Click",
                                  content_type="application/x-www-form-urlencoded", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200 and "Location" not in response


def test_get_and_head_never_change_anything(contact):
    path = one_click_path(contact)
    scanner = Client(HTTP_USER_AGENT="Mozilla/5.0 (compatible; SafeLinks scanner)")
    for _ in range(2):
        assert scanner.get(path).status_code == 200
        assert scanner.head(path).status_code == 200
    prefs = messaging.preferences_url(contact).removeprefix("http://127.0.0.1:8000")
    assert scanner.get(prefs).status_code == 200
    assert services.consent_status(contact, "email") == "subscribed"
    assert ConsentEvent.objects.count() == 1
    page = scanner.get(path)
    assert b'method="post"' in page.content and b"Choose how often" in page.content
    assert page["Cache-Control"] == "no-store" and "noindex" in page["X-Robots-Tag"]


def test_the_page_button_unsubscribes_then_asks_why_optionally(contact):
    path = one_click_path(contact)
    browser = Client(enforce_csrf_checks=True)
    done = browser.post(path + "?via=page")
    assert done.status_code == 200 and b"You are unsubscribed" in done.content
    assert ConsentEvent.objects.filter(source=ConsentSource.UNSUBSCRIBE_PAGE).count() == 1
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', done.content).group(1).decode()
    thanks = browser.post(reverse("compliance:unsubscribe_feedback", args=[path.split("/")[2]]),
                          {"reasons": ["too_many"], "comment": "daily is a lot", "csrfmiddlewaretoken": csrf})
    assert thanks.status_code == 200
    assert contact.unsubscribe_feedback.get().reasons == ["too_many"]


def test_tampered_and_foreign_tokens_get_one_clear_page_and_write_nothing(contact, shop):
    good = tokens.unsubscribe_token(contact)
    other_purpose = [tokens.preferences_token(contact), tokens.confirm_token(contact),
                     signing.dumps({"c": contact.pk, "f": 0, "ch": "email"}, salt="another.salt")]
    mutations = [good[:i] + ("A" if good[i] != "A" else "B") + good[i + 1:] for i in range(0, len(good), 3)]
    bad = mutations + other_purpose + [good[:-4], "x", "%00", "a" * 600, good + "extra"]
    before = ConsentEvent.objects.count()
    bodies = set()
    for token in bad:
        for method in ("get", "post"):
            r = getattr(mail_client(), method)(f"/u/{token}/")
            assert r.status_code in (400, 404), token
            if r.status_code == 400:
                bodies.add(r.content)
    assert len(bodies) == 1 and b"This link is not valid" in bodies.pop()
    assert ConsentEvent.objects.count() == before
    assert Client().get(f"/preferences/{good}/").status_code == 400  # an unsubscribe token is not a prefs token


def test_unsubscribe_links_survive_key_rotation_and_years(contact, settings, monkeypatch):
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 400 * 86400)
    old_token = tokens.unsubscribe_token(contact)
    monkeypatch.setattr(signing.time, "time", real_time)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-after-rotation-0123456789"
    r = mail_client().post(f"/u/{old_token}/", data=b"List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200 and services.consent_status(contact, "email") == "unsubscribed"


def test_a_token_never_acts_on_another_contact_that_reuses_an_id(contact):
    token = tokens.unsubscribe_token(contact)
    payload = tokens.read_unsubscribe(token)
    payload["f"] += 1
    assert tokens.contact_for(payload) is None


def test_preference_center_changes_topics_frequency_and_channels(contact):
    path = messaging.preferences_url(contact).removeprefix("http://127.0.0.1:8000")
    page = Client().get(path)
    assert b"Not a condition of purchase" in page.content or b"not a condition of purchase" in page.content
    r = Client().post(path, {"email": "on", "sms": "on", "topics": ["education"], "frequency": "monthly"},
                      REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Phone")
    assert r.status_code == 200 and b'id="saved"' in r.content
    pref = Preference.objects.get(contact=contact)
    assert (pref.topics, pref.frequency) == (["education"], "monthly")
    sms = ConsentEvent.objects.get(contact=contact, channel="sms")
    assert sms.status == "subscribed" and "condition of purchase" in sms.consent_text and sms.ip == "198.51.100.7"
    Client().post(path, {"topics": ["education"], "frequency": "monthly"})
    assert services.consent_status(contact, "email") == "unsubscribed"
    assert services.consent_status(contact, "sms") == "unsubscribed"


def test_preference_center_keeps_csrf_protection(contact):
    path = messaging.preferences_url(contact).removeprefix("http://127.0.0.1:8000")
    r = Client(enforce_csrf_checks=True).post(path, {"email": "on", "topics": [], "frequency": "news"})
    assert r.status_code == 403


def test_double_opt_in_sign_up_confirmation_and_proof(shop, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = Client().post("/subscribe/", {"email": "Nur@Kedai-Customer.my", "consent": "on"},
                          REMOTE_ADDR="203.0.113.20", HTTP_USER_AGENT="Form/1")
    assert r.status_code == 200
    contact = services.Contact.objects.get(email="nur@kedai-customer.my")
    assert services.consent_status(contact, "email") == "pending"
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "pending_confirmation"
    assert len(mail.outbox) == 1
    link = re.search(r"http://\S+/confirm/\S+/", mail.outbox[0].body).group(0)
    path = link.removeprefix("http://127.0.0.1:8000")
    assert Client().get(path).status_code == 200 and Client().head(path).status_code == 200
    assert services.consent_status(contact, "email") == "pending"
    done = Client().post(path, REMOTE_ADDR="203.0.113.21", HTTP_USER_AGENT="Phone/2")
    assert done.status_code == 200 and b"Subscription confirmed" in done.content
    confirmed = ConsentEvent.objects.get(contact=contact, status="subscribed")
    assert (confirmed.source, confirmed.ip, confirmed.user_agent) == ("double_opt_in", "203.0.113.21", "Phone/2")
    assert confirmed.consent_text.startswith("Yes, email me news") and confirmed.consent_text_sha256
    assert confirmed.proof["requested_at"]
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").allowed


def test_an_expired_confirmation_link_offers_a_new_one(shop, monkeypatch, django_capture_on_commit_callbacks):
    contact = make_contact(email="late@kedai-customer.jp")
    services.consent_record(contact=contact, channel="email", status="pending", source=ConsentSource.FORM)
    real_time = time.time
    monkeypatch.setattr(signing.time, "time", lambda: real_time() - 8 * 86400)
    old = tokens.confirm_token(contact)
    monkeypatch.setattr(signing.time, "time", real_time)
    r = Client().post(f"/confirm/{old}/")
    assert r.status_code == 410 and b"expired" in r.content
    assert services.consent_status(contact, "email") == "pending"
    Client().post(f"/confirm/{old}/resend/")
    assert len(mail.outbox) == 1


def test_sign_up_answers_the_same_whoever_the_address_belongs_to(contact, django_capture_on_commit_callbacks):
    bounced = make_contact(email="gone@kedai-customer.jp")
    services.suppress(channel="email", address=bounced.email, reason=SuppressionReason.HARD_BOUNCE)
    quitter = make_contact(email="quit@kedai-customer.jp")
    services.unsubscribe(contact=quitter, channel="email", source=ConsentSource.ONE_CLICK)
    answers = set()
    for email in ("brand-new@kedai-customer.jp", contact.email, bounced.email, quitter.email):
        with django_capture_on_commit_callbacks(execute=True):
            r = Client().post("/subscribe/", {"email": email, "consent": "on"})
        answers.add((r.status_code, r.content))
    assert len(answers) == 1
    # The hard-bounced address got no email; the subscribed one got none either.
    assert sorted(m.to[0] for m in mail.outbox) == ["brand-new@kedai-customer.jp", "quit@kedai-customer.jp"]


def test_sign_up_without_ticking_the_box_records_nothing(shop):
    r = Client().post("/subscribe/", {"email": "unticked@kedai-customer.jp"})
    assert r.status_code == 200 and b"Tick the box" in r.content
    assert not ConsentEvent.objects.exists() and len(mail.outbox) == 0


def test_confirmation_emails_are_throttled_per_address(shop, django_capture_on_commit_callbacks):
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            Client().post("/subscribe/", {"email": "victim@kedai-customer.jp", "consent": "on"})
    assert len(mail.outbox) == 3


def test_footer_context_has_the_sender_identity_and_links(contact):
    text, html = messaging.render_footer(contact)
    assert "1 Jalan Ampang" in text and "/u/" in text and "/preferences/" in text and "Kedai Demo" in html


def test_mailto_unsubscribe_uses_the_token_in_the_subject(contact, settings):
    from anymail.inbound import AnymailInboundMessage
    from anymail.signals import AnymailInboundEvent, inbound

    settings.COMPLIANCE = {**settings.COMPLIANCE, "UNSUBSCRIBE_MAILTO": "unsubscribe@kedai.example"}
    header = messaging.list_unsubscribe_headers(contact)["List-Unsubscribe"]
    subject = re.search(r"subject=([^>]+)>", header).group(1).replace("%20", " ")
    forged = AnymailInboundMessage.construct(from_email=contact.email, subject="unsubscribe please")
    inbound.send(sender=None, event=AnymailInboundEvent(event_type="inbound", message=forged), esp_name="Postmark")
    assert services.consent_status(contact, "email") == "subscribed"
    message = AnymailInboundMessage.construct(from_email="anyone@else.example", subject=subject)
    inbound.send(sender=None, event=AnymailInboundEvent(event_type="inbound", message=message), esp_name="Postmark")
    assert services.consent_status(contact, "email") == "unsubscribed"


@given(token=st.text(min_size=1, max_size=120).filter(lambda t: "/" not in t and t not in (".", "..")))
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_tokens_never_cause_a_server_error_or_a_write(shop, client, token):
    before = ConsentEvent.objects.count()
    for path in (f"/u/{quote(token)}/", f"/preferences/{quote(token)}/", f"/confirm/{quote(token)}/"):
        assert client.get(path).status_code in (400, 404)
        assert client.post(path).status_code in (400, 403, 404)
    assert ConsentEvent.objects.count() == before
