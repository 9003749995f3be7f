import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from channels.models import Message, MessageStatus, Template, TemplateVersion
from channels.services import message_create, messages_send
from segments.models import Contact

pytestmark = pytest.mark.django_db


def test_saving_a_template_in_the_admin_keeps_every_version(staff_client, cart_template):
    url = reverse("admin:channels_template_change", args=[cart_template.pk])
    data = {"name": "cart-reminder-1", "channel": "email", "purpose": "marketing", "topic": "promotions",
            "subject": "Still thinking it over, {{ contact.first_name }}?", "preheader": "", "html_body": "<p>Hi</p>",
            "text_body": "", "sms_body": "", "sms_max_segments": 2, "push_title": "", "push_body": "", "push_url": ""}
    assert staff_client.post(url, data).status_code == 302
    assert staff_client.post(url, {**data, "html_body": "<p>Hi again</p>"}).status_code == 302
    cart_template.refresh_from_db()
    assert cart_template.version == 2
    assert list(TemplateVersion.objects.filter(template=cart_template).values_list("version", "content__html_body")) \
        == [(1, "<p>Hi</p>"), (2, "<p>Hi again</p>")]


def test_a_template_syntax_error_is_a_field_error_not_a_500(staff_client, cart_template):
    url = reverse("admin:channels_template_change", args=[cart_template.pk])
    data = {"name": "cart-reminder-1", "channel": "email", "purpose": "marketing", "subject": "Hi",
            "html_body": "{% for x in cart.items %}<p>{{ x.title }}</p>", "sms_max_segments": 2}
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "html_body" in response.context["adminform"].form.errors
    data["html_body"] = "{% debug %}"
    assert "html_body" in staff_client.post(url, data).context["adminform"].form.errors


def test_long_sms_templates_warn_about_segments(staff_client):
    data = {"name": "long-sms", "channel": "sms", "purpose": "marketing", "sms_body": "Batik sale! " * 40,
            "sms_max_segments": 2}
    response = staff_client.post(reverse("admin:channels_template_add"), data, follow=True)
    assert "segments long" in response.content.decode()
    template = Template.objects.get(name="long-sms")
    page = staff_client.get(reverse("admin:channels_template_change", args=[template.pk])).content.decode()
    assert "longer than the 2 segments allowed" in page


def test_live_preview_renders_for_a_chosen_contact(staff_client, siti, cart_template):
    url = reverse("admin:channels_template_preview", args=[cart_template.pk])
    body = staff_client.get(url, {"contact": siti.pk}).content.decode()
    assert "Siti, your cart is waiting" in body
    assert "Carbon Steel Wok" in body  # inside the sandboxed iframe's srcdoc
    assert not Message.objects.exists()  # a preview stores nothing


def test_send_me_a_test_from_the_admin_goes_through_smtp(staff_client, smtp_sink, siti, cart_template):
    url = reverse("admin:channels_template_preview", args=[cart_template.pk])
    response = staff_client.post(url, {"contact": siti.pk, "send_to": "owner@kedai.example"}, follow=True)
    assert "Test sent to owner@kedai.example" in response.content.decode()
    assert [e[1] for e in smtp_sink.envelopes] == [["owner@kedai.example"]]
    assert smtp_sink.messages[0]["Subject"] == "Siti, your cart is waiting"  # the previewed contact's data
    message = Message.objects.get()
    assert message.contact.email == "owner@kedai.example" and message.purpose == "transactional"


def test_send_test_command(smtp_sink, siti, cart_template):
    out = call_command("send_test", "cart-reminder-1", "owner@kedai.example", "--contact", "siti@pelanggan.my")
    assert "Test sent" in out and len(smtp_sink.messages) == 1
    with pytest.raises(CommandError, match="no template"):
        call_command("send_test", "nope", "owner@kedai.example")
    with pytest.raises(CommandError, match="no contact"):
        call_command("send_test", "cart-reminder-1", "owner@kedai.example", "--contact", "ghost@example.com")
    with pytest.raises(CommandError, match="not a valid address"):
        call_command("send_test", "cart-reminder-1", "not an address")


def test_esp_tracking_events_move_the_message_forward_only(smtp_sink, siti, cart_template):
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="esp-1")
    messages_send([message.pk])

    def event(kind):
        return AnymailTrackingEvent(event_type=kind, timestamp=timezone.now(), message_id="esp-msg-1",
                                    recipient="siti@pelanggan.my", metadata={"message_id": str(message.pk)})

    tracking.send(sender=object(), event=event("opened"), esp_name="Postmark")
    tracking.send(sender=object(), event=event("delivered"), esp_name="Postmark")  # late, out of order
    message.refresh_from_db()
    assert message.status == MessageStatus.OPENED and message.delivered_at and message.opened_at
    assert siti.events.filter(type="email_opened").count() == 1


def test_the_contact_timeline_shows_messages(staff_client, smtp_sink, siti, cart_template):
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="tl-1")
    messages_send([message.pk])
    page = staff_client.get(reverse("admin:segments_contact_change", args=[siti.pk])).content.decode()
    timeline = page[page.index('id="timeline"'):]
    assert "email: cart-reminder-1" in timeline


def test_message_log_lists_with_constant_queries(staff_client, siti, cart_template, django_assert_max_num_queries):
    for i in range(30):
        c = Contact.objects.create(email=f"m{i}@example.my")
        message_create(contact=c, template=cart_template, idempotency_key=f"log-{i}")
    url = reverse("admin:channels_message_changelist")
    staff_client.get(url)
    with django_assert_max_num_queries(12):
        assert staff_client.get(url).status_code == 200
