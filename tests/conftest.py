import os

import pytest

# Playwright's sync API runs an event loop in this thread; the Django ORM is still safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(autouse=True)
def _fresh_shop_cache():
    from segments.middleware import forget_shop

    forget_shop()
    yield
    forget_shop()


@pytest.fixture
def shop(db):
    from segments.models import Shop

    return Shop.objects.create(name="Kedai Demo", currency="MYR", timezone="Asia/Kuala_Lumpur",
                               postal_address="1 Jalan Ampang, 50450 Kuala Lumpur, Malaysia",
                               sender_name="Kedai Demo", sender_email="hello@kedai.example")


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _announce_inline(settings):
    """Tests see events_ingested inside the request (tests/ingest/test_announcer.py covers the coalescing)."""
    settings.INGEST_ANNOUNCE_SECONDS = 0


@pytest.fixture(autouse=True)
def _no_background_checkpoints(settings):
    """No checkpoint thread left pending when a test ends (tests/ingest/test_concurrent_writes.py covers it)."""
    settings.SQLITE_BACKGROUND_CHECKPOINTS = False


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The public forms' rate limits count in Django's cache: every test starts from zero."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
