"""SMS: segment counting and cost, the opt-out line, and the delivery backends.

Only channels.services (which asks compliance.gate.can_send first) calls send_sms().
Backends: "console" (prints), "file" (JSON files under var/sms, the default) and "twilio".
"""

import json
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal

import phonenumbers
from django.conf import settings
from django.utils.translation import gettext as _

# GSM 03.38 basic set (1 septet) and extension table (2 septets: escape + char).
GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsInfo:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets or UTF-16 code units
    segments: int


def sms_info(text: str) -> SmsInfo:
    """Segments as carriers count them: 160/153 GSM-7 septets, 70/67 UCS-2 units per segment."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text):
        units = sum(2 if ch in GSM7_EXTENDED else 1 for ch in text)
        single, multi = 160, 153
        encoding = "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
        encoding = "UCS-2"
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsInfo(encoding=encoding, units=units, segments=segments if text else 0)


def country_of(phone: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(str(phone))) or ""
    except phonenumbers.NumberParseException:
        return ""


def estimate_cost(phone: str, segments: int) -> tuple[Decimal, str]:
    prices = settings.CHANNELS["SMS_PRICES"]
    price = Decimal(prices.get(country_of(phone), prices.get("default", "0.05")))
    return price * segments, settings.CHANNELS["SMS_PRICE_CURRENCY"]


def sender_for(phone: str) -> str:
    senders = settings.CHANNELS["SMS_SENDERS"]
    return senders.get(country_of(phone)) or senders.get("default", "")


STOP_WORDS = ("STOP",)


def with_opt_out(text: str) -> str:
    """Marketing SMS must say how to stop; add it when the template does not."""
    if "STOP" in text.upper():
        return text
    return f"{text.rstrip()} {_('Reply STOP to opt out')}"


class SmsError(Exception):
    def __init__(self, message: str, *, permanent: bool, code: str = ""):
        super().__init__(message)
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class SmsResult:
    provider: str
    provider_message_id: str
    status: str


def send_sms(*, to: str, body: str, status_callback: str = "") -> SmsResult:
    """Hand one SMS to the configured backend. Raises SmsError(permanent=...)."""
    backend = settings.CHANNELS["SMS_BACKEND"]
    sender = sender_for(to)
    if backend == "twilio":
        return _twilio(to=to, body=body, sender=sender, status_callback=status_callback)
    record = {"to": str(to), "from": sender, "body": body, "id": f"local-{uuid.uuid4().hex}"}
    if backend == "console":
        print(json.dumps(record, ensure_ascii=False))  # noqa: T201 (the console backend prints by design)
    else:
        folder = settings.VAR_DIR / "sms"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record['id']}.json").write_text(json.dumps(record, ensure_ascii=False))
    return SmsResult(provider=backend, provider_message_id=record["id"], status="sent")


# Twilio error codes that will not get better by retrying (Twilio's error dictionary).
TWILIO_PERMANENT = {21211, 21214, 21408, 21610, 21612, 21614, 21606, 21660}


def _twilio(*, to: str, body: str, sender: str, status_callback: str) -> SmsResult:
    from twilio.base.exceptions import TwilioRestException
    from twilio.rest import Client

    conf = settings.CHANNELS
    client = Client(conf["TWILIO_ACCOUNT_SID"], conf["TWILIO_AUTH_TOKEN"])
    kwargs = {"to": str(to), "body": body}
    if conf["TWILIO_MESSAGING_SERVICE_SID"]:
        kwargs["messaging_service_sid"] = conf["TWILIO_MESSAGING_SERVICE_SID"]
    else:
        kwargs["from_"] = sender
    if status_callback:
        kwargs["status_callback"] = status_callback
    try:
        result = client.messages.create(**kwargs)
    except TwilioRestException as exc:
        permanent = exc.code in TWILIO_PERMANENT or (exc.status and 400 <= exc.status < 500 and exc.status != 429)
        raise SmsError(f"Twilio {exc.status} {exc.code}: {exc.msg}", permanent=bool(permanent),
                       code=str(exc.code or "")) from exc
    except Exception as exc:  # network trouble: try again later
        raise SmsError(f"Twilio unreachable: {exc}", permanent=False) from exc
    return SmsResult(provider="twilio", provider_message_id=result.sid, status=result.status or "queued")
