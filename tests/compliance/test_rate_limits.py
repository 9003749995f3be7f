"""The public forms that make us send email are rate limited per client; unsubscribing never is."""

import os

import pytest
from django.core import mail
from django.test import Client, override_settings

from compliance import services, tokens
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_per_hour(settings):
    settings.COMPLIANCE = {**settings.COMPLIANCE,
                           "PUBLIC_RATE_LIMITS": {"signup": (2, 3600), "confirm_resend": (2, 3600)}}


def _signup(email: str, **meta):
    return Client().post("/subscribe/", {"email": email, "consent": "on"}, **meta)


def test_one_client_cannot_make_us_mail_many_addresses(shop, two_per_hour, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answers = [_signup(f"victim{i}@kedai-customer.jp", REMOTE_ADDR="203.0.113.7").status_code for i in range(4)]
        other = _signup("someone@kedai-customer.jp", REMOTE_ADDR="198.51.100.9")
    assert answers == [200, 200, 429, 429]
    assert other.status_code == 200
    assert sorted(m.to[0] for m in mail.outbox) == ["someone@kedai-customer.jp", "victim0@kedai-customer.jp",
                                                   "victim1@kedai-customer.jp"]


def test_an_ipv6_client_is_counted_by_its_64(shop, two_per_hour):
    codes = [_signup(f"v6-{i}@kedai-customer.jp", REMOTE_ADDR=f"2001:db8:1:2::{i + 1}").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert _signup("elsewhere@kedai-customer.jp", REMOTE_ADDR="2001:db8:1:3::1").status_code == 200


def test_behind_a_proxy_the_forwarded_client_is_counted_and_recorded(shop, two_per_hour, settings,
                                                                     django_capture_on_commit_callbacks):
    from compliance.models import ConsentEvent

    settings.TRUSTED_PROXY_HOPS = 1
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    # A client cannot dodge the limit by sending its own X-Forwarded-For: only our proxy's entry counts.
    codes = [_signup(f"p{i}@kedai-customer.jp", HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.50", **proxy).status_code
             for i in range(3)]
    assert codes == [200, 200, 429]
    assert _signup("q@kedai-customer.jp", HTTP_X_FORWARDED_FOR="203.0.113.51", **proxy).status_code == 200
    assert ConsentEvent.objects.get(contact__email="q@kedai-customer.jp").ip == "203.0.113.51"


def test_unsubscribing_is_never_rate_limited(shop, two_per_hour):
    for i in range(5):
        contact = make_contact(email=f"leaving{i}@kedai-customer.jp")
        subscribe(contact)
        response = Client().post(f"/u/{tokens.unsubscribe_token(contact, 'email')}/", REMOTE_ADDR="203.0.113.7")
        assert response.status_code == 200
        assert services.consent_status(contact, "email") == "unsubscribed"


@pytest.mark.skipif(not os.getenv("REDIS_TEST_URL"), reason="needs REDIS_TEST_URL (scripts/test.sh sets it)")
def test_with_redis_every_web_process_shares_the_count(shop, two_per_hour):
    from django.core.cache import caches

    redis_cache = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                               "LOCATION": os.environ["REDIS_TEST_URL"], "KEY_PREFIX": "test-ratelimit"}}
    with override_settings(CACHES=redis_cache):
        caches["default"].clear()
        try:
            assert _signup("r1@kedai-customer.jp", REMOTE_ADDR="203.0.113.8").status_code == 200
            assert _signup("r2@kedai-customer.jp", REMOTE_ADDR="203.0.113.8").status_code == 200
            # Another process has its own memory but the same Redis: it sees the two sign-ups.
            import redis

            keys = redis.Redis.from_url(os.environ["REDIS_TEST_URL"]).keys("test-ratelimit:*ratelimit:signup:*")
            assert len(keys) == 1
            assert _signup("r3@kedai-customer.jp", REMOTE_ADDR="203.0.113.8").status_code == 429
        finally:
            caches["default"].clear()


def test_send_the_link_again_is_limited_too(shop, two_per_hour):
    codes = [Client().post(f"/confirm/not-a-token-{i}/resend/", REMOTE_ADDR="203.0.113.9").status_code
             for i in range(3)]
    assert codes == [400, 400, 429]  # bad links still count: that is what a script trying many would send
