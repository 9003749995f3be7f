"""POST /api/v1/events: one event or a batch, authenticated by an API key (openapi.py documents it)."""

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from segments import collector
from segments.ingest.formats import RowError, clean_email, clean_phone
from segments.ingest.services import Identity, NewEvent, resolve_contacts, store_event_of_known_email, store_events
from segments.models import ApiKey
from segments.models.events import EVENT_TYPE_RE
from segments.models.ingest import hash_api_key

EVENT_FIELDS = {"type", "occurred_at", "properties", "idempotency_key", "email", "phone", "country",
                "customer_id", "customer_source", "anonymous_id", "first_name", "last_name"}
MAX_FUTURE = timedelta(hours=24)
KEY_CACHE_SECONDS = 5.0
_key_cache: dict[str, tuple[int | None, float]] = {}


class FieldError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


@dataclass
class Incoming:
    event: NewEvent
    identity: Identity


def _error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def authenticate(request: HttpRequest) -> int | None:
    """The API key's id, from 'Authorization: Bearer <key>' or 'X-Api-Key'; None when not valid.

    Keys are looked up by hash and cached per process for a few seconds, so a busy client costs
    no query per request; a revoked key stops working within KEY_CACHE_SECONDS.
    """
    # META, not request.headers: that builds a dict of every header on first use.
    header = request.META.get("HTTP_AUTHORIZATION", "")
    raw = header[7:].strip() if header[:7].lower() == "bearer " else request.META.get("HTTP_X_API_KEY", "")
    if not raw:
        return None
    digest = hash_api_key(raw)
    cached = _key_cache.get(digest)
    now = time.monotonic()
    if cached and now - cached[1] < KEY_CACHE_SECONDS:
        return cached[0]
    key_id = ApiKey.objects.active().filter(key_hash=digest).values_list("id", flat=True).first()
    if key_id:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())
    _key_cache[digest] = (key_id, now)
    return key_id


def read_json_body(request: HttpRequest, limit: int):
    """The parsed body, or a JsonResponse: 413 above the limit, 400 when it is not JSON."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > limit:
        return _error(413, f"Body larger than {limit} bytes; send smaller batches.")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _error(413, f"Body larger than {limit} bytes; send smaller batches.")
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"Body is not valid JSON: {exc}")


def _text(obj: dict, name: str, max_len: int) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool) and name in ("customer_id",):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    if len(value) > max_len:
        raise FieldError(name, f"must be at most {max_len} characters")
    return value.strip()


def _time(obj: dict, now: datetime) -> datetime:
    raw = obj.get("occurred_at")
    if raw in (None, ""):
        return now
    if not isinstance(raw, str):
        raise FieldError("occurred_at", "must be an ISO 8601 date-time string")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise FieldError("occurred_at", f"{raw!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise FieldError("occurred_at", "must include a time zone (e.g. 2026-11-22T10:00:00Z)")
    if value > now + MAX_FUTURE:
        raise FieldError("occurred_at", "is more than 24 hours in the future")
    return value


def parse_event(obj, *, source: str, now: datetime) -> Incoming:
    """One event object → the event to store and the identity; FieldError names the first bad field."""
    if not isinstance(obj, dict):
        raise FieldError("(event)", "must be a JSON object")
    unknown = sorted(set(obj) - EVENT_FIELDS)
    if unknown:
        raise FieldError(unknown[0], f"unknown field (allowed: {', '.join(sorted(EVENT_FIELDS))})")
    kind = obj.get("type")
    if not isinstance(kind, str) or not EVENT_TYPE_RE.match(kind):
        raise FieldError("type", "required: lower-case letters, digits and _ . : - (max 64), e.g. product_viewed")
    properties = obj.get("properties", {})
    if not isinstance(properties, dict):
        raise FieldError("properties", "must be a JSON object")
    try:
        email = clean_email(_text(obj, "email", 254))
    except RowError as exc:
        raise FieldError("email", str(exc)) from None
    country = _text(obj, "country", 2).upper()
    try:
        phone = clean_phone(_text(obj, "phone", 32), country)
    except RowError as exc:
        raise FieldError("phone", str(exc) + " (use E.164, e.g. +60123456789, or send country)") from None
    identity = Identity(email=email, phone=str(phone) if phone else None,
                        customer_id=_text(obj, "customer_id", 128),
                        customer_source=_text(obj, "customer_source", 32) or "shop",
                        anonymous_id=_text(obj, "anonymous_id", 64),
                        first_name=_text(obj, "first_name", 100), last_name=_text(obj, "last_name", 100))
    if not (identity.email or identity.phone or identity.customer_id or identity.anonymous_id):
        raise FieldError("email", "who did it? give email, phone, customer_id or anonymous_id")
    event = NewEvent(type=kind, properties=properties, occurred_at=_time(obj, now), received_at=now, source=source,
                     idempotency_key=_text(obj, "idempotency_key", 128), anonymous_id=identity.anonymous_id)
    return Incoming(event, identity)


def ingest(items: list, *, source: str, trigger_flows: bool = True, coalesce: bool = False) -> dict:
    """Validate, resolve people, store; the bad items are reported by index, the good ones kept.

    With the cyclic garbage collector paused (segments.collector): a batch of up to INGEST_MAX_BATCH
    events keeps ~6 containers per event alive until it is stored, which the collector walked again
    and again, with full collections over the whole worker (~13 of ~60 CPU-ms per 1,000 events).
    """
    with collector.paused():
        return _ingest(items, source=source, trigger_flows=trigger_flows, coalesce=coalesce)


def _ingest(items: list, *, source: str, trigger_flows: bool, coalesce: bool) -> dict:
    now = timezone.now()
    good: list[Incoming] = []
    errors = []
    for index, obj in enumerate(items):
        try:
            good.append(parse_event(obj, source=source, now=now))
        except FieldError as exc:
            errors.append({"index": index, "field": exc.field, "message": exc.message})
    ids, duplicates = [], 0
    stored = None
    if len(good) == 1:
        stored = store_event_of_known_email(good[0].event, good[0].identity, trigger_flows=trigger_flows,
                                            coalesce=coalesce)
    if stored is not None:
        ids, duplicates = stored
    elif good:
        resolved = resolve_contacts([g.identity for g in good], source=source).contact_ids
        for g, contact_id in zip(good, resolved, strict=True):
            g.event.contact_id = contact_id
        ids, duplicates = store_events([g.event for g in good], trigger_flows=trigger_flows, coalesce=coalesce)
    return {"accepted": len(ids), "duplicates": duplicates, "rejected": len(errors), "errors": errors}


@csrf_exempt
@require_POST
def events(request: HttpRequest) -> JsonResponse:
    if authenticate(request) is None:
        return _error(401, "Missing or invalid API key (Authorization: Bearer <key>).")
    body = read_json_body(request, settings.INGEST_MAX_BODY_BYTES)
    if isinstance(body, JsonResponse):
        return body
    batch = body.get("batch") if isinstance(body, dict) and "batch" in body else body
    single = not isinstance(batch, list)
    items = [batch] if single else batch
    if not single and not items:
        return _error(400, "batch is empty", field="batch")
    if len(items) > settings.INGEST_MAX_BATCH:
        return _error(413, f"At most {settings.INGEST_MAX_BATCH} events per request.", field="batch")
    result = ingest(items, source="api", coalesce=True)
    if single and result["errors"]:
        err = result["errors"][0]
        return JsonResponse({"error": f"{err['field']}: {err['message']}", **err}, status=400)
    status = 400 if result["rejected"] and not (result["accepted"] or result["duplicates"]) else 202
    return JsonResponse(result, status=status)
