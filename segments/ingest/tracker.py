"""The storefront tracker: the JavaScript the shop pastes into its theme, and the endpoint it posts to."""

import hmac
import json
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from segments.ingest.api import FieldError, ingest, parse_event, read_json_body
from segments.ingest.services import Identity, resolve_contacts
from segments.models import Contact

# The write key is public (it sits in the shop's HTML): it may only add storefront events.
TRACKER_EVENTS = {"page_viewed", "product_viewed", "category_viewed", "searched", "cart_updated", "added_to_cart",
                  "checkout_started", "wishlist_added", "back_in_stock_requested"}
TOKEN_SALT = "segments.tracker.identify"  # noqa: S105 (a signing salt, not a secret)
TOKEN_MAX_AGE = 60 * 60 * 24 * 90
MAX_BODY = 16 * 1024


def identify_token(contact: Contact) -> str:
    """A signed token for links in our emails (?sm_t=...): the landing page identifies the visitor."""
    return signing.dumps(contact.pk, salt=TOKEN_SALT, compress=True)


def contact_from_token(token: str) -> int | None:
    try:
        return int(signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE))
    except (signing.BadSignature, ValueError, TypeError):
        return None


@cache
def _source() -> str:
    return (Path(__file__).parent / "static_js" / "tracker.js").read_text()


def tracker_js(request: HttpRequest) -> HttpResponse:
    config = {"endpoint": request.build_absolute_uri(reverse("ingest:collect")),
              "writeKey": settings.TRACKER_WRITE_KEY, "cookie": settings.TRACKER_COOKIE}
    body = _source().replace("__CONFIG__", json.dumps(config))
    response = HttpResponse(body, content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


def _cors(response: HttpResponse) -> HttpResponse:
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    return response


@csrf_exempt
def collect(request: HttpRequest) -> HttpResponse:
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204))
    if request.method != "POST":
        return _cors(JsonResponse({"error": "POST only"}, status=405))
    body = read_json_body(request, MAX_BODY)
    if isinstance(body, JsonResponse):
        return _cors(body)
    if not isinstance(body, dict):
        return _cors(JsonResponse({"error": "expected a JSON object"}, status=400))
    key = str(body.pop("write_key", ""))
    if not settings.TRACKER_WRITE_KEY or not hmac.compare_digest(key.encode(), settings.TRACKER_WRITE_KEY.encode()):
        return _cors(JsonResponse({"error": "bad write key"}, status=401))
    if body.get("type") == "identify":
        return _cors(_identify(body))
    if body.get("type") not in TRACKER_EVENTS:
        return _cors(JsonResponse({"error": f"type: one of {', '.join(sorted(TRACKER_EVENTS))}",
                                   "field": "type"}, status=400))
    result = ingest([body], source="tracker", coalesce=True)
    status = 400 if result["errors"] else 202
    return _cors(JsonResponse(result, status=status))


def _identify(body: dict) -> JsonResponse:
    """The visitor said who they are: attach the anonymous id and merge its history into the contact."""
    anonymous_id = str(body.get("anonymous_id") or "")[:64]
    if not anonymous_id:
        return JsonResponse({"error": "anonymous_id is required", "field": "anonymous_id"}, status=400)
    token = str(body.get("token") or "")
    if token:
        contact_id = contact_from_token(token)
        contact = Contact.objects.filter(pk=contact_id).first() if contact_id else None
        if contact is None:
            return JsonResponse({"error": "token: invalid or expired", "field": "token"}, status=400)
        identity = Identity(email=contact.email, phone=str(contact.phone) if contact.phone else None,
                            anonymous_id=anonymous_id)
    else:
        try:
            parsed = parse_event({"type": "identify", **{k: body.get(k) for k in (
                "email", "phone", "first_name", "last_name") if body.get(k)}, "anonymous_id": anonymous_id},
                source="tracker", now=timezone.now())
        except FieldError as exc:
            return JsonResponse({"error": f"{exc.field}: {exc.message}", "field": exc.field}, status=400)
        identity = parsed.identity
        if not (identity.email or identity.phone):
            return JsonResponse({"error": "email or phone is required", "field": "email"}, status=400)
    contact_id = resolve_contacts([identity], source="tracker").contact_ids[0]
    return JsonResponse({"contact": bool(contact_id)}, status=202)
