"""Public pages: unsubscribe (RFC 8058 one-click + a page), preferences, double opt-in, sign-up.

Rules: GET and HEAD never change anything (mail scanners fetch every link); the token in the URL
is the only authority (no login, no cookies); a bad token gets a clear page with status 400,
never a 500; the one-click POST never reads the body, so an odd or malformed body (RFC 8058's own
multipart example) cannot make it fail, and it answers 200 directly, never a redirect.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from compliance import messaging, ratelimit, services, tokens
from compliance.forms import FeedbackForm, PreferencesForm, SignupForm
from compliance.models import ConsentSource, ConsentStatus
from segments.middleware import current_shop

try:
    from django.contrib.auth.decorators import login_not_required
except ImportError:  # Django < 5.1
    def login_not_required(view):
        return view

# The exact wording shown next to each box; it is stored with the consent as proof (in the language shown).
SMS_CONSENT_TEXT = gettext_lazy(
    "I agree to receive recurring marketing text messages from %(shop)s at this number. Consent is not a "
    "condition of purchase. Message frequency varies. Msg & data rates may apply. Reply HELP for help, STOP to "
    "cancel.")
EMAIL_CONSENT_TEXT = gettext_lazy("Yes, email me news and offers from %(shop)s. I can unsubscribe at any time.")


def _client(request: HttpRequest) -> dict:
    return {"ip": ratelimit.client_ip(request),
            "user_agent": request.META.get("HTTP_USER_AGENT", "")[:400]}


def _page(request: HttpRequest, template: str, context: dict | None = None, status: int = 200) -> HttpResponse:
    response = render(request, f"compliance/{template}", {"shop": current_shop(), **(context or {})}, status=status)
    # Token pages: never cached, never indexed, never leak the token in a Referer.
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex, nofollow"
    # same-origin, not no-referrer: browsers send "Origin: null" under no-referrer and CSRF would refuse
    # the page's own forms; same-origin still keeps the token out of any third-party Referer.
    response["Referrer-Policy"] = "same-origin"
    return response


def _invalid(request: HttpRequest) -> HttpResponse:
    return _page(request, "invalid_link.html", status=400)


def public(view):
    return login_not_required(view)


@public
@csrf_exempt  # RFC 8058: the POST carries no cookie and no CSRF token; the signed URL is the authority.
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        payload = tokens.read_unsubscribe(token)
    except tokens.TokenInvalid:
        return _invalid(request)
    contact = tokens.contact_for(payload)
    channel = payload.get("ch", "email")
    if request.method != "POST":
        already = contact is None or services.consent_status(contact, channel) == ConsentStatus.UNSUBSCRIBED
        return _page(request, "unsubscribe.html", {"token": token, "channel": channel, "already": already,
                                                   "preferences_url": _prefs(contact)})
    if contact is not None:
        # The body is never read: request.POST would make Django parse (and maybe reject) it.
        source = ConsentSource.UNSUBSCRIBE_PAGE if request.GET.get("via") == "page" else ConsentSource.ONE_CLICK
        services.unsubscribe(contact=contact, channel=channel, source=source, actor="the person",
                             **_client(request))
    return _page(request, "unsubscribed.html", {"token": token, "channel": channel,
                                                "preferences_url": _prefs(contact), "form": FeedbackForm()})


def _prefs(contact) -> str:
    return messaging.preferences_url(contact) if contact is not None else ""


@public
@require_POST
def unsubscribe_feedback(request: HttpRequest, token: str) -> HttpResponse:
    try:
        payload = tokens.read_unsubscribe(token)
    except tokens.TokenInvalid:
        return _invalid(request)
    contact = tokens.contact_for(payload)
    form = FeedbackForm(request.POST)
    if contact is not None and form.is_valid() and (form.cleaned_data["reasons"] or form.cleaned_data["comment"]):
        services.unsubscribe_feedback_record(contact=contact, reasons=form.cleaned_data["reasons"],
                                             comment=form.cleaned_data["comment"])
    return _page(request, "thanks.html")


@public
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    try:
        contact = tokens.contact_for(tokens.read_preferences(token))
    except tokens.TokenInvalid:
        return _invalid(request)
    if contact is None:
        return _invalid(request)
    shop = current_shop()
    channels = [c for c in ("email", "sms") if services.contact_address(contact, c)]
    texts = {"email": str(EMAIL_CONSENT_TEXT) % {"shop": shop.name}, "sms": str(SMS_CONSENT_TEXT) % {"shop": shop.name}}
    pref = services.preference_for(contact)
    initial = {c: services.consent_status(contact, c) == ConsentStatus.SUBSCRIBED for c in channels}
    initial.update(topics=pref.topics, frequency=pref.frequency)
    saved = False
    if request.method == "POST":
        form = PreferencesForm(request.POST, channels=channels, initial=initial)
        if form.is_valid():
            services.preferences_update(contact=contact, channels={c: form.cleaned_data[c] for c in channels},
                                        topics=form.cleaned_data["topics"], frequency=form.cleaned_data["frequency"],
                                        consent_texts=texts, **_client(request))
            saved = True
    else:
        form = PreferencesForm(channels=channels, initial=initial)
    blocked = {c for c in channels if services.active_suppressions(contact, c) & {"hard_bounce", "invalid"}}
    return _page(request, "preferences.html", {"form": form, "saved": saved, "texts": texts, "blocked": blocked,
                                               "unsubscribe_url": messaging.unsubscribe_url(contact)})


@public
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    try:
        contact = tokens.contact_for(tokens.read_confirm(token))
    except tokens.TokenExpired:
        return _page(request, "confirm_expired.html", {"token": token}, status=410)
    except tokens.TokenInvalid:
        return _invalid(request)
    if contact is None:
        return _invalid(request)
    if request.method != "POST":
        done = services.consent_status(contact, "email") == ConsentStatus.SUBSCRIBED
        return _page(request, "confirm.html", {"token": token, "done": done})
    ok = services.doi_confirm(contact=contact, **_client(request))
    return _page(request, "confirmed.html" if ok else "invalid_link.html", status=200 if ok else 400)


@public
@require_POST
def confirm_resend(request: HttpRequest, token: str) -> HttpResponse:
    """An expired confirmation link: send a fresh one (still throttled per day)."""
    if not ratelimit.allow(request, "confirm_resend"):
        return _page(request, "rate_limited.html", status=429)
    try:
        tokens.read_confirm(token)
        contact = None  # not expired: nothing to resend
    except tokens.TokenExpired as expired:
        contact = tokens.contact_for(expired.payload) if isinstance(expired.payload.get("c"), int) else None
    except tokens.TokenInvalid:
        return _invalid(request)
    if contact is not None and services.consent_status(contact, "email") == ConsentStatus.PENDING:
        services.doi_send(contact=contact)
    return _page(request, "check_inbox.html")


@public
@require_http_methods(["GET", "HEAD", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    shop = current_shop()
    text = str(EMAIL_CONSENT_TEXT) % {"shop": shop.name}
    form = SignupForm(request.POST or None)
    if request.method == "POST" and not ratelimit.allow(request, "signup"):
        return _page(request, "rate_limited.html", status=429)
    if request.method == "POST" and form.is_valid() and not form.cleaned_data["consent"]:
        form.add_error("consent", _("Tick the box to subscribe: we only email people who ask us to."))
    elif request.method == "POST" and form.is_valid():
        # The same answer whatever the address's state, so the form reveals nothing about who is listed.
        services.signup_request(email=form.cleaned_data["email"], consent_text=text,
                                affirmative=form.cleaned_data["consent"], first_name=form.cleaned_data["first_name"],
                                **_client(request))
        return _page(request, "check_inbox.html")
    return _page(request, "signup.html", {"form": form, "consent_text": text})

