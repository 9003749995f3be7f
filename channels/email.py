"""Turn a Message into a ready-to-send email: rendered, personalised, inlined, tracked, compliant.

Only channels.services (which asks compliance.gate.can_send first) calls build_email().
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from html import unescape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.html import escape

from channels import tracking
from channels.models import Message, Purpose
from channels.rendering import contact_context, render_string
from compliance import messaging
from segments.middleware import current_shop

HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@lru_cache(maxsize=4096)
def with_utm(url: str, *, campaign: str, content: str) -> str:
    """utm_source/medium/campaign/content on links to the shop's own site; existing values win."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in (("utm_source", "shop_automation"), ("utm_medium", "email"), ("utm_campaign", campaign),
                       ("utm_content", content)):
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _is_shop_link(url: str) -> bool:
    shop_host = urlsplit(current_shop().website_url or "").hostname
    host = urlsplit(url).hostname
    return bool(shop_host and host and (host == shop_host or host.endswith("." + shop_host)))


def _is_own_link(url: str) -> bool:
    return url.startswith(settings.SITE_URL)


def track_links(html: str, message: Message, *, campaign: str, content: str) -> tuple[str, list[str]]:
    """Rewrite http(s) links to signed click-tracking URLs; return the html and the link list."""
    links: list[str] = []

    def rewrite(match: re.Match) -> str:
        url = unescape(match.group(3)).strip()
        if not url.lower().startswith(("http://", "https://")) or _is_own_link(url):
            return match.group(0)  # mailto:, tel:, anchors, our own unsubscribe/preference links
        if _is_shop_link(url):
            url = with_utm(url, campaign=campaign, content=content)
        links.append(url)
        tracked = tracking.click_url(message.pk, len(links) - 1)
        return f"{match.group(1)}{match.group(2)}{escape(tracked)}{match.group(2)}"

    return HREF.sub(rewrite, html), links


_DROP = re.compile(r"<(head|style|script|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LINK = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(["'])(.*?)\1[^>]*>(.*?)</a\s*>""", re.IGNORECASE | re.DOTALL)
_LIST_ITEM = re.compile(r"<li\b[^>]*>", re.IGNORECASE)
_BLOCK = re.compile(r"</?(p|div|br|tr|h[1-6]|table|section|ul|ol)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def _link_text(match: re.Match) -> str:
    href, label = unescape(match.group(2)).strip(), match.group(3)
    return f"{label} ({href})" if href.lower().startswith(("http://", "https://")) else label


def html_to_text(html: str) -> str:
    """A readable plain-text alternative: blocks become lines, links keep their URL in brackets."""
    html = _COMMENT.sub("", _DROP.sub("", html))
    html = _LINK.sub(_link_text, html)
    html = _BLOCK.sub("\n", _LIST_ITEM.sub("\n- ", html))
    text = unescape(_TAG.sub("", html)).replace("\xa0", " ").replace("\u200c", "").replace("\u034f", "")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _with_preheader(html: str, preheader: str) -> str:
    if not preheader:
        return html
    hidden = (f'<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">{escape(preheader)}'
              "&#847;&zwnj;&nbsp;" * 40 + "</div>")
    match = re.search(r"<body[^>]*>", html, re.IGNORECASE)
    return html[: match.end()] + hidden + html[match.end():] if match else hidden + html


def _append_before_body_end(html: str, fragment: str) -> str:
    idx = html.lower().rfind("</body>")
    return html[:idx] + fragment + html[idx:] if idx >= 0 else html + fragment


@dataclass
class RenderedEmail:
    subject: str
    html: str
    text: str
    headers: dict
    links: list


def render_email(message: Message) -> RenderedEmail:
    """Everything the email will contain, for its contact (used by previews and by build_email)."""
    from channels.preview import render_contact

    template, recipient = message.template, message.contact
    contact = render_contact(message)
    shop = current_shop()
    key = (template.pk, message.template_version or template.version)
    marketing = message.purpose == Purpose.MARKETING
    with translation.override(contact.locale or shop.default_locale or None):
        context = contact_context(contact, message.context)
        subject = " ".join(render_string(template.subject, context, key=(*key, "subject"), autoescape=False).split())
        preheader = render_string(template.preheader, context, key=(*key, "preheader"), autoescape=False).strip()
        html = render_string(template.html_body, context, key=(*key, "html"))
        if "<body" not in html.lower():
            html = f"<!doctype html><html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>"
        footer_text, footer_html = (_marketing_footer(recipient, shop) if marketing else _transactional_footer(shop))
        html = _with_preheader(_append_before_body_end(html, footer_html), preheader)
        campaign = (message.origin.split("/")[0] or "message").replace(":", "-")
        html, links = track_links(html, message, campaign=campaign, content=template.name)
        if message.pk:
            html = _append_before_body_end(html, f'<img src="{escape(tracking.open_url(message.pk))}" width="1" '
                                                 'height="1" alt="" style="display:block">')
        html = _inliner.inline(html)
        if template.text_body.strip():
            text = render_string(template.text_body, context, key=(*key, "text"), autoescape=False)
            text = f"{text.rstrip()}\n\n{footer_text}"
        else:
            text = html_to_text(re.sub(r"<img[^>]*>", "", html))
    headers = messaging.list_unsubscribe_headers(recipient) if marketing else {}
    return RenderedEmail(subject=subject, html=html, text=text, headers=headers, links=links)


def build_email(message: Message) -> EmailMultiAlternatives:
    """The message as one email for the SMTP/ESP backend. Only channels.services calls this."""
    rendered = render_email(message)
    shop = current_shop()
    sender = f"{shop.sender_name or shop.name} <{shop.sender_email}>" if shop.sender_email else None
    email = EmailMultiAlternatives(subject=rendered.subject, body=rendered.text, from_email=sender,
                                   to=[message.contact.email],
                                   reply_to=[shop.reply_to_email] if shop.reply_to_email else None,
                                   headers=dict(rendered.headers))
    email.attach_alternative(rendered.html, "text/html")
    # anymail: message_id comes back in tracking events; compliance's pre_send guard reads purpose.
    email.metadata = {"message_id": str(message.pk), "purpose": message.purpose}
    email.tags = [message.template.name]
    message.links = rendered.links
    return email


_FOOTERS: dict = {}
_SENTINELS = {"unsubscribe_url": "https://sentinel.invalid/unsubscribe", "preferences_url": "https://sentinel.invalid/preferences"}


def _marketing_footer(contact, shop) -> tuple[str, str]:
    """compliance's footer, rendered once per language and shop version; each contact's own
    signed links are put in place of sentinel URLs (rendering it per message cost ~1 ms)."""
    key = (translation.get_language(), shop.pk, shop.updated_at)
    if key not in _FOOTERS:
        _FOOTERS.clear()
        context = {**messaging.footer_context(contact), **_SENTINELS}
        _FOOTERS[key] = (render_to_string("compliance/email/footer.txt", context),
                         render_to_string("compliance/email/footer.html", context))
    text, html = _FOOTERS[key]
    links = messaging.footer_context(contact)
    for name, sentinel in _SENTINELS.items():
        text = text.replace(sentinel, links[name])
        html = html.replace(sentinel, escape(links[name]))
    return text, html


def _transactional_footer(shop) -> tuple[str, str]:
    address = shop.postal_address or ""
    return (f"--\n{shop.name}\n{address}\n",
            f'<p style="color:#777;font-size:12px">{escape(shop.name)}<br>{escape(address).replace(chr(10), "<br>")}</p>')
