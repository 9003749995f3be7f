"""Turn a Message into a ready-to-send email: rendered, personalised, inlined, tracked, compliant.

Only channels.services (which asks compliance.gate.can_send first) calls build_email().
"""

import re
from dataclasses import dataclass
from functools import lru_cache
from html import escape as html_escape
from html import unescape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.crypto import salted_hmac
from django.utils.html import escape

from channels import tracking
from channels.models import Message, Purpose
from channels.rendering import contact_context, render_string
from compliance import messaging, tokens
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


@lru_cache(maxsize=4096)
def _host(url: str) -> str | None:
    return urlsplit(url).hostname


def _is_shop_link(url: str, shop_host: str | None = None) -> bool:
    shop_host = shop_host if shop_host is not None else _host(current_shop().website_url or "")
    host = _host(url)
    return bool(shop_host and host and (host == shop_host or host.endswith("." + shop_host)))


def track_links(html: str, message: Message, *, campaign: str, content: str) -> tuple[str, list[str]]:
    """Rewrite http(s) links to signed click-tracking URLs; return the html and the link list."""
    links: list[str] = []
    shop_host = _host(current_shop().website_url or "") or ""
    prefix = tracking.click_prefix()

    def rewrite(match: re.Match) -> str:
        url = _link_target(match.group(3), shop_host, campaign, content, settings.SITE_URL)
        if url is None:
            return match.group(0)  # mailto:, tel:, anchors, our own unsubscribe/preference links
        links.append(url)
        tracked = prefix + tracking.click_token(message.pk, len(links) - 1)
        return f"{match.group(1)}{match.group(2)}{html_escape(tracked)}{match.group(2)}"

    return HREF.sub(rewrite, html), links


@lru_cache(maxsize=4096)
def _link_target(raw: str, shop_host: str, campaign: str, content: str, site_url: str) -> str | None:
    """What a link in the template points to, with UTM on shop links; None for links left alone.
    The same few links recur in every message of a campaign: decided once."""
    url = unescape(raw).strip()
    if not url.lower().startswith(("http://", "https://")) or url.startswith(site_url):
        return None
    return with_utm(url, campaign=campaign, content=content) if _is_shop_link(url, shop_host) else url


_DROP = re.compile(r"<(head|style|script|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_LINK = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(["'])(.*?)\1[^>]*>(.*?)</a\s*>""", re.IGNORECASE | re.DOTALL)
_LIST_ITEM = re.compile(r"<li\b[^>]*>", re.IGNORECASE)
_BLOCK = re.compile(r"</?(p|div|br|tr|h[1-6]|table|section|ul|ol)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def _link_text(match: re.Match) -> str:
    href, label = unescape(match.group(2)).strip(), match.group(3)
    if not _TAG.sub("", label).strip():
        return ""  # an image link: its URL alone on a line helps no one (the title link repeats it)
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
    # The filler keeps inbox apps from pulling body text into the preview after the preheader.
    # On a line of its own: with the <body> tag and the first block it passed RFC 5322's 998
    # octets, which made the whole HTML part quoted-printable (larger, and ~45 us to encode).
    hidden = (f'\n<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">{escape(preheader)}'
              + "&#847;&zwnj;&nbsp;" * 40 + "</div>\n")
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
        subject = " ".join(_render(template.subject, context, (*key, "subject"), autoescape=False).split())
        preheader = _render(template.preheader, context, (*key, "preheader"), autoescape=False).strip()
        html = render_string(template.html_body, context, key=(*key, "html"))
        if "<body" not in html.lower():
            html = f"<!doctype html><html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>"
        links = compliance_links(recipient) if marketing else None
        footer_text, footer_html = (_marketing_footer(recipient, links, shop) if marketing
                                    else _transactional_footer(shop))
        campaign = (message.origin.split("/")[0] or "message").replace(":", "-")
        html, tracked = track_links(_append_before_body_end(html, footer_html), message, campaign=campaign,
                                    content=template.name)
        if template.text_body.strip():
            text = render_string(template.text_body, context, key=(*key, "text"), autoescape=False)
            text = f"{text.rstrip()}\n\n{footer_text}"
        else:
            # From the HTML before the hidden preheader, the open pixel and CSS inlining: the same
            # words and links for a third of the regex work.
            text = html_to_text(html)
        # The hidden preheader and the open pixel carry their own inline styles and go in after
        # inlining: the template's rules (`img {width:100%}`) are not for them, and the preheader's
        # 120 filler entities were half of css-inline's work.
        html = _with_preheader(_inliner.inline(html), preheader)
        if message.pk:
            html = _append_before_body_end(html, f'<img src="{escape(tracking.open_url(message.pk))}" width="1" '
                                                 'height="1" alt="" style="display:block">')
    headers = links["headers"] if marketing else {}
    return RenderedEmail(subject=subject, html=html, text=text, headers=dict(headers), links=tracked)


def _render(source: str, context: dict, key: tuple, autoescape: bool) -> str:
    """A field without template syntax (most preheaders, many subjects) is its own rendering."""
    if "{" not in source:
        return source
    return render_string(source, context, key=key, autoescape=autoescape)


def message_id_header(message: Message) -> str:
    """The RFC 5322 Message-ID of this Message, the same on every attempt: a provider's record of
    it (Mailgun, SES and SendGrid events carry the header) settles a send the worker could not record."""
    domain = (settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1] or "localhost").strip(">")
    mac = _message_id_mac(settings.SECRET_KEY).copy()  # = salted_hmac("channels.message-id", pk)
    mac.update(str(message.pk).encode())
    return f"<m{message.pk}.{mac.hexdigest()[:16]}@{domain}>"


@lru_cache(maxsize=4)
def _message_id_mac(secret: str):
    """salted_hmac's derived key for message_id_header, once per SECRET_KEY instead of per message."""
    return salted_hmac("channels.message-id", b"", secret)


def build_email(message: Message) -> EmailMultiAlternatives:
    """The message as one email for the SMTP/ESP backend. Only channels.services calls this."""
    rendered = render_email(message)
    shop = current_shop()
    sender = f"{shop.sender_name or shop.name} <{shop.sender_email}>" if shop.sender_email else None
    email = EmailMultiAlternatives(subject=rendered.subject, body=rendered.text, from_email=sender,
                                   to=[message.contact.email],
                                   reply_to=[shop.reply_to_email] if shop.reply_to_email else None,
                                   headers={**rendered.headers, "Message-ID": message_id_header(message)})
    email.attach_alternative(rendered.html, "text/html")
    # anymail: message_id comes back in tracking events; compliance's pre_send guard reads purpose.
    email.metadata = {"message_id": str(message.pk), "purpose": message.purpose}
    email.tags = [message.template.name]
    message.links = rendered.links
    return email


# -- compliance's links and footer, without a URL resolver walk per message ----------------------------

@lru_cache(maxsize=8)
def _url_around(name: str) -> tuple[str, str]:
    url = reverse(name, args=["TOKEN"])
    head, _, tail = url.rpartition("TOKEN")
    return settings.SITE_URL + head, tail


def compliance_links(contact) -> dict:
    """The contact's signed unsubscribe and preference URLs and RFC 8058 headers, exactly as
    compliance.messaging makes them (tests compare), with reverse() done once per process:
    it cost ~130 µs a call here, three calls per message."""
    token = tokens.unsubscribe_token(contact, "email")
    head, tail = _url_around("compliance:unsubscribe")
    unsubscribe = f"{head}{token}{tail}"
    head, tail = _url_around("compliance:preferences")
    preferences = f"{head}{tokens.preferences_token(contact)}{tail}"
    targets = [f"<{unsubscribe}>"]
    mailto = settings.COMPLIANCE["UNSUBSCRIBE_MAILTO"]
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe%20{token}>")
    return {"unsubscribe_url": unsubscribe, "preferences_url": preferences,
            "headers": {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}}


_FOOTERS: dict = {}
_SENTINELS = {"unsubscribe_url": "https://sentinel.invalid/unsubscribe", "preferences_url": "https://sentinel.invalid/preferences"}


def _marketing_footer(contact, links: dict, shop) -> tuple[str, str]:
    """compliance's footer, rendered once per language and shop version; each contact's own
    signed links are put in place of sentinel URLs (rendering it per message cost ~1 ms)."""
    key = (translation.get_language(), shop.pk, shop.updated_at)
    if key not in _FOOTERS:
        if len(_FOOTERS) > 32:  # a handful of languages; a shop edit makes a new key
            _FOOTERS.clear()
        context = {**messaging.footer_context(contact), **_SENTINELS}
        _FOOTERS[key] = (render_to_string("compliance/email/footer.txt", context),
                         render_to_string("compliance/email/footer.html", context))
    text, html = _FOOTERS[key]
    for name, sentinel in _SENTINELS.items():
        text = text.replace(sentinel, links[name])
        html = html.replace(sentinel, escape(links[name]))
    return text, html


def _transactional_footer(shop) -> tuple[str, str]:
    address = shop.postal_address or ""
    return (f"--\n{shop.name}\n{address}\n",
            f'<p style="color:#777;font-size:12px">{escape(shop.name)}<br>{escape(address).replace(chr(10), "<br>")}</p>')
