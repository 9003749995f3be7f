"""Column layouts recognised from a file's header, and the clean-up every messy cell needs.

A layout turns one raw row (header → cell) into a ContactRow: what the columns mean, kept
rather than dropped. Consent columns become ConsentStatements with the proof the file has
(Mailchimp's OPTIN_TIME / OPTIN_IP / CONFIRM_TIME ...). Layouts are matched on the header
alone, in the order of LAYOUTS; an unknown header raises UnknownLayout listing what we expected.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, validate_email
from django.utils.dateparse import parse_datetime
from phonenumber_field.phonenumber import PhoneNumber

from segments import phones
from segments.models.contacts import normalize_email

SUBSCRIBED, UNSUBSCRIBED, CLEANED, PENDING, NOT_SUBSCRIBED = (
    "subscribed", "unsubscribed", "cleaned", "pending", "not_subscribed")


class UnknownLayout(ValueError):
    """The header matches none of the layouts we know; the message lists what each expects."""


class RowError(ValueError):
    """This row cannot be imported; the message is the reason shown in the report."""


@dataclass
class ConsentStatement:
    channel: str  # "email" | "sms"
    state: str
    occurred_at: datetime | None = None
    proof: dict = field(default_factory=dict)

    def __reduce__(self):
        """Pickled as the constructor's arguments (see ContactRow.__reduce__)."""
        return (ConsentStatement, (self.channel, self.state, self.occurred_at, self.proof))


@dataclass
class ContactRow:
    line: int
    email: str | None = None
    phone: str | None = None  # E.164, validated
    first_name: str = ""
    last_name: str = ""
    country: str = ""
    locale: str = ""
    timezone: str = ""
    tags: list[str] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    customer_ids: list[tuple[str, str]] = field(default_factory=list)  # (source, value)
    consents: list[ConsentStatement] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # every file line merged into this person

    def __reduce__(self):
        """Pickled as the constructor's arguments, in field order, not as a dict of attributes.

        Parsed rows travel from the parsing child to the writer by pickle (segments/ingest/pipeline.py):
        the default form names every field of every row, and loading it cost the writer ~8 ms per
        2,000-row chunk; this form is a quarter smaller and loads in less than half the time (B1).
        """
        return (ContactRow, (self.line, self.email, self.phone, self.first_name, self.last_name, self.country,
                             self.locale, self.timezone, self.tags, self.properties, self.customer_ids,
                             self.consents, self.warnings, self.lines))


# --- cells ------------------------------------------------------------------------------------

def cell(value) -> str:
    """Trim a cell; drop the apostrophe spreadsheets (and Shopify's export) put before ids and phones."""
    if value is None:
        return ""
    text = (value if value.__class__ is str else str(value)).strip()
    if text[:1] == "'":
        text = text[1:].strip()
    return text


# A plain address (dot-atom local part, host name domain) that Django's validate_email accepts, in
# one regex built from its own parts: a match needs no further check, anything else is checked by
# validate_email itself (quoted local parts, IP literals, localhost).
_PLAIN_EMAIL = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]+)*@"
    + EmailValidator.hostname_re + EmailValidator.domain_re + EmailValidator.tld_no_fqdn_re,
    re.IGNORECASE)


def clean_email(raw: str) -> str | None:
    """'  Ana@Example.COM ' → 'ana@example.com'; None when empty; RowError when not an address."""
    email = normalize_email(cell(raw).replace(" ", ""))
    if not email:
        return None
    if len(email) <= 320 and _PLAIN_EMAIL.fullmatch(email):
        return email
    try:
        validate_email(email)
    except ValidationError:
        raise RowError(f"email {raw.strip()!r} is not a valid address") from None
    return email


_COUNTRY = re.compile(r"[A-Z]{2}")


def clean_country(raw: str) -> str:
    code = cell(raw).upper()
    return code if _COUNTRY.fullmatch(code) else ""


def parse_phone(raw: str, country: str = "") -> PhoneNumber | None:
    """A national or international number, with the row's country as the region; RowError if invalid.

    Parsed straight into phonenumber_field's PhoneNumber, so assigning it to Contact.phone does
    not parse it again. Never test it for truth: PhoneNumber.__len__ formats the number.
    """
    text = cell(raw)
    if not text:
        return None
    region = country or settings.PHONENUMBER_DEFAULT_REGION or None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phones.parse(text, None if text.startswith("+") else region, numobj=PhoneNumber())
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phones.is_valid(number):
        where = f" for {region}" if region and not text.startswith("+") else ""
        raise RowError(f"phone {raw.strip()!r} is not a valid number{where}")
    return number


def e164(number: PhoneNumber) -> str:
    return phones.e164(number)


def clean_phone(raw: str, country: str = "") -> str | None:
    """A national or international number → E.164, with the row's country as the region."""
    number = parse_phone(raw, country)
    return None if number is None else e164(number)


def parse_time(raw: str) -> datetime | None:
    """'2015-03-16 14:40:47' (Mailchimp, UTC), ISO 8601, or '2024-01-15 10:23:45 -0500' (Shopify)."""
    text = cell(raw)
    if not text:
        return None
    value = parse_datetime(text)
    if value is None:
        for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z", "%Y-%m-%d"):
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        raise RowError(f"{text!r} is not a date and time")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Cells are compared with dashes and spaces as underscores: "opt-in", "opt in" and "opt_in" are one value.
YES = {"yes", "y", "true", "1", "subscribed", "opted_in", "opt_in", "x"}
NO = {"no", "n", "false", "0", "not_subscribed", "never_subscribed"}


def consent_state(raw: str) -> str | None:
    """A consent cell → one of the documented states, or None when the cell says nothing."""
    text = "_".join(cell(raw).lower().replace("-", " ").split())
    if not text:
        return None
    if text in YES:
        return SUBSCRIBED
    if text in NO:
        return NOT_SUBSCRIBED
    if text in ("unsubscribed", "opted_out", "opt_out"):
        return UNSUBSCRIBED
    if text in ("cleaned", "bounced", "suppressed"):
        return CLEANED
    if text in ("pending", "unconfirmed"):
        return PENDING
    raise RowError(f"consent value {raw.strip()!r} is not one of yes/no/subscribed/unsubscribed/cleaned/pending")


def split_tags(raw: str) -> list[str]:
    """'vip, denver' or Mailchimp's '"VIP","Blog"' → ['vip', 'denver']; tags are at most 64 characters."""
    parts = re.split(r"[,;]", cell(raw))
    tags = [p.strip().strip('"').strip()[:64] for p in parts]
    return list(dict.fromkeys(t for t in tags if t))


# --- layouts -------------------------------------------------------------------------------

@dataclass
class Layout:
    name: str
    label: str
    required: tuple[str, ...]  # header names (case-insensitive) that identify it
    extract: Callable[[dict, "Layout"], ContactRow] | None = None
    consent_columns: tuple[str, ...] = ()
    marker: tuple[str, ...] = ()  # any one of these must be present too

    def matches(self, header: set[str]) -> bool:
        if not all(c.lower() in header for c in self.required):
            return False
        return not self.marker or any(m.lower() in header for m in self.marker)

    def has_consent_columns(self, header: set[str]) -> bool:
        return any(c.lower() in header for c in self.consent_columns)


def normalize_header(names) -> list[str]:
    out = []
    for name in names:
        text = "" if name is None else str(name)
        out.append(text.replace("\ufeff", "").strip())
    return out


def _get(row: dict, *names: str) -> str:
    """The first non-empty cell among the given column names (compared case-insensitively)."""
    for name in names:
        value = row.get(name.lower())
        if value not in (None, ""):
            return str(value)
    return ""


def _identity(row: dict, out: ContactRow, email_cols: tuple, phone_cols: tuple) -> None:
    """Email and phone with the rules for a usable row: at least one must be valid."""
    problems = []
    try:
        out.email = clean_email(_get(row, *email_cols))
    except RowError as exc:
        problems.append(str(exc))
    phone_raw = _get(row, *phone_cols)
    try:
        out.phone = clean_phone(phone_raw, out.country)
    except RowError as exc:
        problems.append(str(exc))
    if not out.email and not out.phone:
        reason = "; ".join(problems) if problems else "no email address or phone number"
        raise RowError(reason)
    out.warnings.extend(f"{p}: imported without it" for p in problems)


def _extract_shopify(row: dict, layout: Layout) -> ContactRow:
    out = ContactRow(line=0)
    out.country = clean_country(_get(row, "Default Address Country Code", "Country Code"))
    _identity(row, out, ("Email",), ("Phone", "Default Address Phone"))
    out.first_name = cell(_get(row, "First Name"))[:100]
    out.last_name = cell(_get(row, "Last Name"))[:100]
    out.tags = split_tags(_get(row, "Tags"))
    customer_id = cell(_get(row, "Customer ID"))
    if customer_id:
        out.customer_ids.append(("shopify", customer_id))
    note = cell(_get(row, "Note"))
    if note:
        out.properties["note"] = note
    for column, key in (("Default Address City", "city"), ("City", "city"), ("Total Spent", "shopify_total_spent"),
                        ("Total Orders", "shopify_total_orders")):
        value = cell(_get(row, column))
        if value and key not in out.properties:
            out.properties[key] = value
    email_state = consent_state(_get(row, "Accepts Email Marketing", "Accepts Marketing"))
    if email_state and out.email:
        out.consents.append(ConsentStatement("email", email_state))
    sms_state = consent_state(_get(row, "Accepts SMS Marketing"))
    if sms_state and out.phone:
        out.consents.append(ConsentStatement("sms", sms_state))
    return out


MAILCHIMP_KNOWN = {
    "email address", "first name", "last name", "phone number", "member_rating", "optin_time", "optin_ip",
    "confirm_time", "confirm_ip", "latitude", "longitude", "gmtoff", "dstoff", "timezone", "cc", "region",
    "last_changed", "leid", "euid", "notes", "tags", "unsub_time", "unsub_campaign_title", "unsub_campaign_id",
    "unsub_reason", "unsub_reason_other", "clean_time", "clean_campaign_title", "clean_campaign_id",
}


def _extract_mailchimp(row: dict, layout: Layout) -> ContactRow:
    out = ContactRow(line=0)
    out.country = clean_country(_get(row, "CC"))
    _identity(row, out, ("Email Address",), ("Phone Number",))
    out.first_name = cell(_get(row, "First Name"))[:100]
    out.last_name = cell(_get(row, "Last Name"))[:100]
    out.tags = split_tags(_get(row, "TAGS"))
    tz = cell(_get(row, "TIMEZONE"))
    if "/" in tz:
        out.timezone = tz
    if cell(_get(row, "NOTES")):
        out.properties["note"] = cell(_get(row, "NOTES"))
    for key, value in row.items():  # the audience's own merge fields (Birthday, Address...)
        if key not in MAILCHIMP_KNOWN and cell(value):
            out.properties[key] = cell(value)
    proof = {k.lower(): cell(_get(row, k)) for k in (
        "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LEID", "EUID", "LAST_CHANGED",
        "UNSUB_TIME", "UNSUB_REASON", "UNSUB_REASON_OTHER", "UNSUB_CAMPAIGN_TITLE", "CLEAN_TIME",
        "CLEAN_CAMPAIGN_TITLE") if cell(_get(row, k))}
    if layout.name == "mailchimp_cleaned":
        state, when = CLEANED, parse_time(_get(row, "CLEAN_TIME"))
    elif layout.name == "mailchimp_unsubscribed":
        state, when = UNSUBSCRIBED, parse_time(_get(row, "UNSUB_TIME"))
    else:
        state, when = SUBSCRIBED, parse_time(_get(row, "CONFIRM_TIME", "OPTIN_TIME"))
    if out.email:
        out.consents.append(ConsentStatement("email", state, when, proof))
    return out


def _extract_klaviyo(row: dict, layout: Layout) -> ContactRow:
    out = ContactRow(line=0)
    out.country = clean_country(_get(row, "Country"))
    _identity(row, out, ("Email",), ("Phone Number",))
    out.first_name = cell(_get(row, "First Name"))[:100]
    out.last_name = cell(_get(row, "Last Name"))[:100]
    for column, key in (("City", "city"), ("State / Region", "region"), ("Zip Code", "zip"),
                        ("Organization", "organization"), ("Source", "klaviyo_source"),
                        ("Klaviyo ID", "klaviyo_id")):
        if cell(_get(row, column)):
            out.properties[key] = cell(_get(row, column))
    tz = cell(_get(row, "Timezone"))
    if "/" in tz:
        out.timezone = tz
    when = parse_time(_get(row, "Email Marketing Consent Timestamp"))
    email_state = consent_state(_get(row, "Email Marketing Consent"))
    if email_state and out.email:
        out.consents.append(ConsentStatement("email", email_state, when))
    sms_state = consent_state(_get(row, "SMS Marketing Consent", "SMS Consent"))
    if sms_state and out.phone:
        out.consents.append(ConsentStatement("sms", sms_state, parse_time(_get(row, "SMS Marketing Consent Timestamp"))))
    return out


TEMPLATE_COLUMNS = frozenset((
    "email", "phone", "first_name", "last_name", "country", "locale", "timezone", "tags", "customer_id",
    "email_consent", "sms_consent", "consent_at", "consent_ip", "consent_text"))


def _extract_template(row: dict, layout: Layout) -> ContactRow:
    # The template's column names are lower case already: plain row.get() instead of _get().
    get = row.get
    out = ContactRow(line=0)
    out.country = clean_country(get("country"))
    _identity(row, out, ("email",), ("phone",))
    out.first_name = cell(get("first_name"))[:100]
    out.last_name = cell(get("last_name"))[:100]
    out.locale = cell(get("locale"))[:10]
    out.timezone = cell(get("timezone"))[:64]
    if get("tags"):
        out.tags = split_tags(get("tags"))
    customer_id = cell(get("customer_id"))
    if customer_id:
        out.customer_ids.append(("shop", customer_id))
    properties = out.properties
    for key, value in row.items():  # every other column is a custom property
        if value and key and key not in TEMPLATE_COLUMNS:
            value = cell(value)
            if value:
                properties[key] = value
    when = parse_time(get("consent_at") or "")
    proof = {k: cell(get(k)) for k in ("consent_ip", "consent_text") if cell(get(k))}
    for channel, column, usable in (("email", "email_consent", out.email), ("sms", "sms_consent", out.phone)):
        state = consent_state(get(column) or "")
        if state and usable:
            out.consents.append(ConsentStatement(channel, state, when, dict(proof)))
    return out


SHOPIFY_CUSTOMERS = Layout(
    "shopify_customers", "Shopify customer export", ("First Name", "Last Name", "Email", "Phone"),
    _extract_shopify, ("Accepts Email Marketing", "Accepts Marketing", "Accepts SMS Marketing"),
    marker=("Accepts Email Marketing", "Accepts Marketing"))
MAILCHIMP_CLEANED = Layout("mailchimp_cleaned", "Mailchimp audience export (cleaned)",
                           ("Email Address", "CLEAN_TIME"), _extract_mailchimp, ("CLEAN_TIME",))
MAILCHIMP_UNSUBSCRIBED = Layout("mailchimp_unsubscribed", "Mailchimp audience export (unsubscribed)",
                                ("Email Address", "UNSUB_TIME"), _extract_mailchimp, ("UNSUB_TIME",))
MAILCHIMP_SUBSCRIBED = Layout("mailchimp_subscribed", "Mailchimp audience export (subscribed)",
                              ("Email Address", "OPTIN_TIME", "CONFIRM_TIME"), _extract_mailchimp,
                              ("OPTIN_TIME", "CONFIRM_TIME"))
KLAVIYO = Layout("klaviyo_profiles", "Klaviyo profile export", ("Email", "Phone Number", "First Name", "Last Name"),
                 _extract_klaviyo, ("Email Marketing Consent", "SMS Marketing Consent", "SMS Consent"),
                 marker=("Klaviyo ID", "State / Region", "Email Marketing Consent"))
TEMPLATE = Layout("template", "our contact template", (), _extract_template, ("email_consent", "sms_consent"),
                  marker=("email", "phone"))

LAYOUTS = [SHOPIFY_CUSTOMERS, MAILCHIMP_CLEANED, MAILCHIMP_UNSUBSCRIBED, MAILCHIMP_SUBSCRIBED, KLAVIYO, TEMPLATE]

SHOPIFY_ORDERS_REQUIRED = ("Name", "Email", "Financial Status", "Created at", "Currency", "Total",
                           "Lineitem quantity", "Lineitem name", "Lineitem price")


def _describe(layout: Layout) -> str:
    cols = list(layout.required) + ([f"one of {' / '.join(layout.marker)}"] if layout.marker else [])
    return f"{layout.label}: {', '.join(cols)}"


def detect_contact_layout(header: list[str]) -> Layout:
    names = {h.lower() for h in header}
    for layout in LAYOUTS:
        if layout.matches(names):
            return layout
    expected = "\n".join(f"  - {_describe(layout)}" for layout in LAYOUTS)
    raise UnknownLayout(
        f"Unrecognised contact file. Its columns are: {', '.join(header) or '(none)'}.\n"
        f"Expected the columns of one of:\n{expected}")


def check_orders_layout(header: list[str]) -> str:
    names = {h.lower() for h in header}
    missing = [c for c in SHOPIFY_ORDERS_REQUIRED if c.lower() not in names]
    if missing:
        raise UnknownLayout(
            f"Unrecognised orders file: missing {', '.join(missing)}. "
            f"Expected Shopify's orders export with at least: {', '.join(SHOPIFY_ORDERS_REQUIRED)} "
            f"(plus Id, Lineitem sku, Subtotal, Shipping, Taxes, Discount Code, Discount Amount, Refunded Amount, "
            f"Cancelled at, Fulfillment Status, Phone, Billing Name, Billing Country when present).")
    return "shopify_orders"
