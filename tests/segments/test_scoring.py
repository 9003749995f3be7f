from datetime import timedelta

import pytest
from django.utils import timezone

from segments.models import Contact, ContactScore, Shop
from segments.scoring import best_send_hour, rfm_refresh, send_hours_refresh, shop_best_send_hour
from segments.tasks import scores_refresh
from tests.segments.conftest import add_event, add_order, refresh_figures

pytestmark = pytest.mark.django_db


def test_rfm_quintiles_rank_recency_frequency_and_money():
    contacts = [Contact.objects.create(email=f"r{i}@example.com") for i in range(10)]
    for i, c in enumerate(contacts):
        for k in range(i + 1):  # contact i: i+1 orders, the last one i days ago, spending more with i
            add_order(c, days_ago=i + k * 3, total=f"{(i + 1) * 10}.00")
    Contact.objects.create(email="never@example.com")
    refresh_figures(*contacts)
    assert rfm_refresh() == 10
    scores = {s.contact_id: s for s in ContactScore.objects.all()}
    newest, oldest = scores[contacts[0].pk], scores[contacts[9].pk]
    assert (newest.rfm_recency, newest.rfm_frequency, newest.rfm_monetary) == (5, 1, 1)
    assert (oldest.rfm_recency, oldest.rfm_frequency, oldest.rfm_monetary) == (1, 5, 5)
    assert sorted(s.rfm_monetary for s in scores.values()) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_rfm_ties_share_a_score_and_refunds_clear_it():
    a, b = Contact.objects.create(email="a@example.com"), Contact.objects.create(email="b@example.com")
    order = add_order(a, days_ago=1, total="20.00")
    add_order(b, days_ago=1, total="20.00")
    refresh_figures(a, b)
    rfm_refresh()
    sa, sb = ContactScore.objects.get(contact=a), ContactScore.objects.get(contact=b)
    assert (sa.rfm_frequency, sa.rfm_monetary) == (sb.rfm_frequency, sb.rfm_monetary)
    order.status = "refunded"
    order.save()
    refresh_figures(a)
    rfm_refresh()
    assert ContactScore.objects.get(contact=a).rfm == ""


def test_best_send_hour_is_the_contacts_most_engaged_hour_else_the_shops():
    Shop.objects.create(timezone="Asia/Kuala_Lumpur")  # UTC+8
    now = timezone.now().replace(hour=11, minute=0, second=0, microsecond=0)  # 19:00 in KL
    keen, quiet = Contact.objects.create(email="keen@example.my"), Contact.objects.create(email="q@example.my")
    for d in range(3):
        add_event(keen, "email_opened", now=now - timedelta(days=d + 1))
    add_event(keen, "email_clicked", now=now - timedelta(days=1, hours=10))  # 09:00 KL, once
    assert send_hours_refresh() == 1
    assert best_send_hour(keen) == 19
    assert shop_best_send_hour() == 19
    assert best_send_hour(quiet) == 19  # falls back to the shop's hour


def test_scores_task_runs_both_refreshes():
    c = Contact.objects.create(email="t@example.com")
    add_order(c, days_ago=2, total="5.00")
    refresh_figures(c)
    assert scores_refresh() == "RFM for 1 customers, send hours for 0 contacts"
