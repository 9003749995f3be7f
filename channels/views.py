"""Public endpoints of the channels app: tracking, Twilio webhooks, web push subscription."""

import json
import logging

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from channels import tracking
from channels.models import Message, MessageStatus
from channels.push import subscription_save
from channels.receivers import message_advance
from compliance.services import sms_keyword_handle
from segments.models import ContactIdentifier

log = logging.getLogger(__name__)
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
         b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


@require_GET
def click(request: HttpRequest, token: str) -> HttpResponse:
    """Redirect to a link of the message, and only to one: never an open redirect."""
    decoded = tracking.read_click(token)
    message = Message.objects.select_related("template").filter(pk=decoded[0]).first() if decoded else None
    if message is None or not (0 <= decoded[1] < len(message.links or [])):
        return render(request, "channels/bad_link.html", status=404)
    url = message.links[decoded[1]]
    message_advance(message, MessageStatus.CLICKED, url=url)
    return HttpResponseRedirect(url)


@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    message_id = tracking.read_open(token)
    message = Message.objects.select_related("template").filter(pk=message_id).first() if message_id else None
    if message is not None:
        message_advance(message, MessageStatus.OPENED)
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = "no-store, private"
    return response


def _twilio_valid(request: HttpRequest) -> bool:
    from twilio.request_validator import RequestValidator

    token = settings.CHANNELS["TWILIO_AUTH_TOKEN"]
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        return False
    url = settings.SITE_URL + request.get_full_path()
    return RequestValidator(token).validate(url, request.POST.dict(), signature)


def _twiml(text: str | None) -> HttpResponse:
    from xml.sax.saxutils import escape

    body = f"<Message>{escape(text)}</Message>" if text else ""
    return HttpResponse(f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
                        content_type="text/xml")


@csrf_exempt
@require_POST
def twilio_inbound(request: HttpRequest) -> HttpResponse:
    """Inbound SMS: STOP/START/HELP keywords go to the compliance app; the reply goes back as TwiML."""
    if not _twilio_valid(request):
        return HttpResponseForbidden("invalid Twilio signature")
    phone, body = request.POST.get("From", ""), request.POST.get("Body", "")
    if not phone:
        return HttpResponseBadRequest("From is missing")
    reply = sms_keyword_handle(phone=phone, body=body, message_id=request.POST.get("MessageSid", ""))
    return _twiml(reply)


TWILIO_STATUS = {"delivered": MessageStatus.DELIVERED, "undelivered": MessageStatus.FAILED,
                 "failed": MessageStatus.FAILED}


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Delivery receipts. Unknown messages get 200 so Twilio does not retry forever."""
    if not _twilio_valid(request):
        return HttpResponseForbidden("invalid Twilio signature")
    sid, status = request.POST.get("MessageSid", ""), request.POST.get("MessageStatus", "")
    # (the exclude repeats the partial index condition, so SQLite uses the index)
    message = (Message.objects.filter(provider="twilio", provider_message_id=sid).exclude(provider_message_id="")
               .first() if sid else None)
    if message is not None and status in TWILIO_STATUS:
        message_advance(message, TWILIO_STATUS[status])
        if status in ("undelivered", "failed"):
            Message.objects.filter(pk=message.pk).update(
                error=f"Twilio {status} {request.POST.get('ErrorCode', '')}".strip(), failed_at=timezone.now())
    return HttpResponse(status=204)


def service_worker(request: HttpRequest) -> HttpResponse:
    response = render(request, "channels/push/sw.js", content_type="application/javascript")
    response["Service-Worker-Allowed"] = "/"
    return response


def push_snippet(request: HttpRequest) -> HttpResponse:
    return render(request, "channels/push/subscribe.js",
                  {"vapid_public_key": settings.CHANNELS["VAPID_PUBLIC_KEY"], "site_url": settings.SITE_URL,
                   "cookie": settings.TRACKER_COOKIE},
                  content_type="application/javascript")


@csrf_exempt
@require_POST
def push_subscribe(request: HttpRequest) -> JsonResponse:
    """Store a browser subscription for the visitor the storefront tracker knows (anonymous id)."""
    if len(request.body) > 8_000:
        return JsonResponse({"error": "body too large"}, status=413)
    try:
        data = json.loads(request.body)
        endpoint = str(data["subscription"]["endpoint"])
        keys = data["subscription"]["keys"]
        p256dh, auth = str(keys["p256dh"]), str(keys["auth"])
        anonymous_id = str(data["anonymous_id"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected {subscription: {endpoint, keys: {p256dh, auth}}, anonymous_id}"},
                            status=400)
    if not endpoint.startswith("https://"):
        return JsonResponse({"error": "subscription.endpoint must be an https URL"}, status=400)
    identity = ContactIdentifier.objects.filter(kind="anonymous", value=anonymous_id).first()
    if identity is None:
        return JsonResponse({"error": "unknown visitor: identify first (newsletter form, checkout)"}, status=404)
    subscription_save(contact=identity.contact, endpoint=endpoint, p256dh=p256dh, auth=auth,
                      user_agent=request.headers.get("User-Agent", ""), ip=request.META.get("REMOTE_ADDR"))
    return JsonResponse({"ok": True}, status=201)
