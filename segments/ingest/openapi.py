"""The events API described as OpenAPI 3.1, served at /api/v1/openapi.json."""

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from segments.models import EventType


def _event_schema() -> dict:
    return {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "description": "Something a person did. Name the person by at least one of email, phone, customer_id, "
                       "anonymous_id (email wins, then phone). Unknown people are created without marketing "
                       "consent.",
        "properties": {
            "type": {"type": "string", "pattern": "^[a-z][a-z0-9_.:-]{0,63}$",
                     "examples": [c for c, _label in EventType.choices]},
            "occurred_at": {"type": "string", "format": "date-time",
                            "description": "With a time zone; default: when received. At most 24 h ahead."},
            "properties": {"type": "object", "description": "Anything about the event (product, value...)."},
            "idempotency_key": {"type": "string", "maxLength": 128,
                                "description": "Sending the same key again stores nothing new (a duplicate)."},
            "email": {"type": "string", "format": "email"},
            "phone": {"type": "string", "description": "E.164 (+60123456789), or national with `country`."},
            "country": {"type": "string", "minLength": 2, "maxLength": 2, "description": "ISO region for phone."},
            "customer_id": {"type": "string", "description": "The shop's customer id."},
            "customer_source": {"type": "string", "default": "shop",
                                "description": "Which system issued customer_id (shopify, woocommerce...)."},
            "anonymous_id": {"type": "string", "maxLength": 64, "description": "The storefront visitor id."},
            "first_name": {"type": "string"},
            "last_name": {"type": "string"},
        },
    }


def build() -> dict:
    error = {"type": "object", "properties": {"index": {"type": "integer"}, "field": {"type": "string"},
                                              "message": {"type": "string"}}}
    result = {"type": "object", "properties": {
        "accepted": {"type": "integer", "description": "Events stored now."},
        "duplicates": {"type": "integer", "description": "Events whose idempotency key was already stored."},
        "rejected": {"type": "integer"}, "errors": {"type": "array", "items": error}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Shop marketing automation: events API", "version": "1"},
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "An API key created in the admin (shown once)."}},
            "schemas": {"Event": _event_schema(), "Result": result},
        },
        "security": [{"apiKey": []}],
        "paths": {"/api/v1/events": {"post": {
            "summary": f"Send one event, or a batch of up to {settings.INGEST_MAX_BATCH}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/Event"},
                {"type": "object", "required": ["batch"], "properties": {"batch": {
                    "type": "array", "minItems": 1, "maxItems": settings.INGEST_MAX_BATCH,
                    "items": {"$ref": "#/components/schemas/Event"}}}},
            ]}}}},
            "responses": {
                "202": {"description": "Accepted. In a batch, bad events are listed by index in `errors` "
                                       "while the good ones are stored.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Result"}}}},
                "400": {"description": "Not JSON, or no event valid; `field` names the bad field."},
                "401": {"description": "Missing, unknown or revoked API key."},
                "413": {"description": f"Body larger than {settings.INGEST_MAX_BODY_BYTES} bytes or more than "
                                       f"{settings.INGEST_MAX_BATCH} events."},
            },
        }}},
    }


def schema(request: HttpRequest) -> JsonResponse:
    return JsonResponse(build())
