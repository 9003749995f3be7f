"""What a message needs from compliance: links, list headers, the legal footer.

For the channels app::

    unsubscribe_url(contact, channel="email") -> str        # https URL of the one-click endpoint
    preferences_url(contact) -> str
    list_unsubscribe_headers(contact) -> dict[str, str]    # {"List-Unsubscribe": ..., "List-Unsubscribe-Post": ...}
    footer_context(contact, channel="email") -> dict       # shop name, sender, postal address, links
    render_footer(contact, channel="email") -> tuple[str, str]   # (text, html)

Add the two headers to every marketing email before the ESP signs it (RFC 8058 §4 wants both
covered by DKIM).
"""

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from compliance import tokens
from segments.middleware import current_shop
from segments.models import Contact


def absolute(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def unsubscribe_url(contact: Contact, channel: str = "email") -> str:
    return absolute(reverse("compliance:unsubscribe", args=[tokens.unsubscribe_token(contact, channel)]))


def preferences_url(contact: Contact) -> str:
    return absolute(reverse("compliance:preferences", args=[tokens.preferences_token(contact)]))


def confirm_url(contact: Contact) -> str:
    return absolute(reverse("compliance:confirm", args=[tokens.confirm_token(contact)]))


def list_unsubscribe_headers(contact: Contact) -> dict[str, str]:
    """RFC 8058: one https URL (plus an optional mailto carrying the token) and the One-Click marker."""
    token = tokens.unsubscribe_token(contact, "email")
    targets = [f"<{absolute(reverse('compliance:unsubscribe', args=[token]))}>"]
    mailto = settings.COMPLIANCE["UNSUBSCRIBE_MAILTO"]
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe%20{token}>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def footer_context(contact: Contact, channel: str = "email") -> dict:
    shop = current_shop()
    return {
        "shop_name": shop.name,
        "sender_name": shop.sender_name or shop.name,
        "sender_email": shop.sender_email,
        "postal_address": shop.postal_address,
        "unsubscribe_url": unsubscribe_url(contact, channel),
        "preferences_url": preferences_url(contact),
    }


def render_footer(contact: Contact, channel: str = "email") -> tuple[str, str]:
    context = footer_context(contact, channel)
    return (render_to_string("compliance/email/footer.txt", context),
            render_to_string("compliance/email/footer.html", context))


def send_confirmation_email(contact: Contact) -> None:
    """The double opt-in email. Only compliance.services.doi_send calls this, after the gate."""
    shop = current_shop()
    with translation.override(contact.locale or shop.default_locale or None):
        context = {"shop_name": shop.name, "confirm_url": confirm_url(contact), "contact": contact,
                   "postal_address": shop.postal_address}
        subject = render_to_string("compliance/email/confirm-subject.txt", context).strip()
        text = render_to_string("compliance/email/confirm-body.txt", context)
        html = render_to_string("compliance/email/confirm-body.html", context)
    sender = f"{shop.sender_name or shop.name} <{shop.sender_email}>" if shop.sender_email else None
    message = EmailMultiAlternatives(subject=subject, body=text, from_email=sender, to=[contact.email])
    message.attach_alternative(html, "text/html")
    message.metadata = {"purpose": "transactional", "kind": "double_opt_in"}  # read by anymail and guard.py
    message.send()
