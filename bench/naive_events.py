"""The naive reference for B2: the events endpoint as a straightforward Django view would write it.

Per request the key is looked up; per event, the contact and the event are each a get_or_create
(the idempotency key makes the second one return the stored event) and events_ingested is sent
inside the request. Served by its own gunicorn with the same workers, with Django's default
CONN_MAX_AGE=0 (a new database connection per request), as PERFORMANCE.md's reference (b) says.
"""

import json

from django.http import HttpRequest, JsonResponse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from segments.models import ApiKey, Contact, Event
from segments.models.ingest import hash_api_key
from segments.signals import events_ingested


@csrf_exempt
@require_POST
def events(request: HttpRequest) -> JsonResponse:
    raw = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not ApiKey.objects.active().filter(key_hash=hash_api_key(raw)).exists():
        return JsonResponse({"error": "bad key"}, status=401)
    body = json.loads(request.body)
    items = body["batch"] if isinstance(body, dict) and "batch" in body else [body]
    accepted = duplicates = 0
    for item in items:
        contact, _ = Contact.objects.get_or_create(email=item["email"].strip().lower(), defaults={"source": "naive"})
        event, created = Event.objects.get_or_create(
            source="naive", idempotency_key=item["idempotency_key"],
            defaults={"contact": contact, "type": item["type"], "properties": item.get("properties", {}),
                      "occurred_at": parse_datetime(item["occurred_at"])})
        if created:
            accepted += 1
            events_ingested.send(sender=Event, event_ids=[event.pk], trigger_flows=True)
        else:
            duplicates += 1
    return JsonResponse({"accepted": accepted, "duplicates": duplicates, "rejected": 0, "errors": []}, status=202)

