"""Admin preview and "send me a test": the real rendering, for a chosen contact."""

import uuid

from django.utils import translation
from django.utils.translation import gettext as _

from channels.models import Message, MessageStatus, Purpose, Template
from channels.rendering import contact_context, render_string
from channels.sms import sms_info, with_opt_out
from segments.middleware import current_shop
from segments.models import Contact


def render_contact(message: Message) -> Contact:
    """Whose data fills the template: the recipient, or for a test send the contact previewed."""
    as_id = (message.context or {}).get("as_contact")
    if as_id:
        return Contact.objects.filter(pk=as_id).first() or message.contact
    return message.contact


def preview_for(template: Template, contact: Contact) -> dict:
    """What the contact would get, without sending or storing anything."""
    with translation.override(contact.locale or current_shop().default_locale or None):
        if template.channel == "email":
            from channels.email import render_email

            message = Message(pk=None, contact=contact, template=template, template_version=template.version,
                              channel="email", purpose=template.purpose, origin="preview")
            email = render_email(message)
            return {"subject": email.subject, "html": email.html, "text": email.text, "headers": email.headers}
        context = contact_context(contact)
        if template.channel == "sms":
            body = render_string(template.sms_body, context, autoescape=False).strip()
            if template.purpose == Purpose.MARKETING:
                body = with_opt_out(body)
            return {"text": body, "sms": sms_info(body)}
        return {"subject": render_string(template.push_title, context, autoescape=False),
                "text": render_string(template.push_body, context, autoescape=False), "url": template.push_url}


def send_test(template: Template, to: str, *, contact: Contact | None, requested_by: str) -> tuple[bool, str]:
    """Send one test through the normal path (gate included) to `to`, with `contact`'s data."""
    from channels.services import message_create, messages_send

    to = (to or "").strip()
    field = "phone" if to.startswith("+") else "email"
    if (template.channel == "sms") != (field == "phone") and template.channel != "push":
        return False, _("Send an SMS test to a phone number and an email test to an email address.")
    recipient = Contact.objects.by_identity(**{field: to}).first()
    if recipient is None:
        recipient = Contact(**{field: to}, source="staff-test", first_name=requested_by[:100])
        try:
            recipient.full_clean(exclude=["properties", "tags"])
        except Exception as exc:
            return False, _("%(to)s is not a valid address: %(error)s") % {"to": to, "error": exc}
        recipient.save()
    message, _created = message_create(
        contact=recipient, template=template, idempotency_key=f"test:{uuid.uuid4().hex}",
        origin=f"test:{requested_by}"[:120], purpose=Purpose.TRANSACTIONAL,
        context={"as_contact": contact.pk} if contact else {})
    messages_send([message.pk])
    message.refresh_from_db()
    if message.status == MessageStatus.SENT:
        return True, _("Test sent to %(to)s (message %(id)d).") % {"to": to, "id": message.pk}
    return False, _("The test was not sent: %(status)s %(reason)s %(error)s") % {
        "status": message.status, "reason": message.gate_reason, "error": message.error}
