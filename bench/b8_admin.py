"""B8: admin page latency and query counts at scale, against a naive admin of the same models.

Data: the shared generator at 100k contacts / 1M events / 200k orders (full) or
10k / 100k / 20k (small). Pages: contact list (plain, search, filter, page 500), contact
detail with its timeline, order list, event list (plain and filtered by type), dashboard.
Each page is fetched warm REPEAT times with the test client as a superuser; we report p95
server time and the query count, and the same for the naive admin. Target: p95 <= 300 ms at
100k contacts; query counts constant (checked by loading the contact list with 20 and 100
rows per page).
"""

import time

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings

from bench.framework import p95, row
from segments.datagen import SIZES, Generator
from segments.models import Contact

REPEAT = 15


def pages(contact_id: int, n_contacts: int) -> list[tuple[str, str, str]]:
    """(label, our url, naive url)."""
    mid_page = max(1, min(500, n_contacts // 100 - 1))
    c = "/admin/segments/contact/"
    nc = "/naive-admin/segments/contact/"
    return [
        ("contact list", c, nc),
        ("contact search", f"{c}?q=siti", f"{nc}?q=siti"),
        ("contact filter", f"{c}?customer=repeat&reach=sms", f"{nc}?source__exact=shopify"),
        (f"contact list page {mid_page}", f"{c}?p={mid_page}", f"{nc}?p={mid_page}"),
        ("contact detail + timeline", f"{c}{contact_id}/change/", f"{nc}{contact_id}/change/"),
        ("order list", "/admin/segments/order/", "/naive-admin/segments/order/"),
        ("event list", "/admin/segments/event/", "/naive-admin/segments/event/"),
        ("event list by type", "/admin/segments/event/?type=cart_updated",
         "/naive-admin/segments/event/?type__exact=cart_updated"),
        ("dashboard", "/admin/", "/naive-admin/"),
    ]


def measure(client: Client, url: str) -> tuple[float, int, int]:
    client.get(url)  # warm
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    return p95(times), len(ctx.captured_queries), response.status_code


@override_settings(ROOT_URLCONF="bench.urls", ALLOWED_HOSTS=["testserver"], DEBUG=False)
def run(*, size: str, db: str) -> list[dict]:
    spec = SIZES[size]
    start = time.perf_counter()
    Generator(size=spec, seed=8).run()
    build = time.perf_counter() - start
    print(f"generated {spec.contacts:,} contacts, {spec.events:,} events, {spec.orders:,} orders in {build:.0f} s")
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pw")
    client = Client()
    client.force_login(user)
    busiest = Contact.objects.order_by("-orders_count").values_list("pk", flat=True).first()
    rows = []
    for label, ours, naive in pages(busiest, spec.contacts):
        t_ours, q_ours, s_ours = measure(client, ours)
        t_naive, q_naive, s_naive = measure(client, naive)
        ok = s_ours == 200 and s_naive == 200 and t_ours <= 0.300
        rows.append(row("b8", label, db, 1, t_ours, reference=t_naive, higher_is_better=False, ok=ok,
                        p95_ms=round(t_ours * 1000, 1), naive_p95_ms=round(t_naive * 1000, 1),
                        queries=q_ours, naive_queries=q_naive))
    # Constant queries: the contact list costs the same at 20 and at 100 rows per page.
    _t, q20, _s = measure(client, "/admin/segments/contact/?customer=yes&o=-5")
    with override_settings():
        from segments.admin import ContactAdmin

        ContactAdmin.list_per_page, saved = 20, ContactAdmin.list_per_page
        _t, q_small, _s = measure(client, "/admin/segments/contact/?customer=yes&o=-5")
        ContactAdmin.list_per_page = saved
    rows.append(row("b8", "contact list queries: 100 vs 20 rows", db, 1, 1.0, ok=q20 == q_small,
                    queries=q20, naive_queries=q_small))
    return rows
