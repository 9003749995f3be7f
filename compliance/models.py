"""What the compliance app knows: consent (with its append-only proof log), suppressions,
the send log the gate counts, ESP events, sunset state, sender pauses and erasure audits.

The current consent of a contact on a channel (`Consent`) is kept in step with its log
(`ConsentEvent`) by compliance.services.consent_record(), the only writer of both.
"""

import hashlib

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from segments.models import Contact


class Channel(models.TextChoices):
    EMAIL = "email", _("email")
    SMS = "sms", _("SMS")
    PUSH = "push", _("push")


class Purpose(models.TextChoices):
    MARKETING = "marketing", _("marketing")
    TRANSACTIONAL = "transactional", _("transactional")


class Topic(models.TextChoices):
    PROMOTIONS = "promotions", _("promotions")
    NEW_PRODUCTS = "new_products", _("new products")
    EDUCATION = "education", _("education")


class Frequency(models.TextChoices):
    NEWS = "news", _("as often as there is news")
    WEEKLY = "weekly", _("at most once a week")
    MONTHLY = "monthly", _("at most once a month")


class ConsentStatus(models.TextChoices):
    NEVER_ASKED = "never_asked", _("never asked")
    PENDING = "pending", _("pending confirmation")
    SUBSCRIBED = "subscribed", _("subscribed")
    UNSUBSCRIBED = "unsubscribed", _("unsubscribed")


class ConsentSource(models.TextChoices):
    FORM = "form", _("sign-up form")
    DOUBLE_OPT_IN = "double_opt_in", _("double opt-in confirmation")
    PREFERENCE_CENTER = "preference_center", _("preference center")
    ONE_CLICK = "one_click", _("one-click unsubscribe")
    UNSUBSCRIBE_PAGE = "unsubscribe_page", _("unsubscribe page")
    MAILTO = "mailto", _("unsubscribe email")
    SMS_KEYWORD = "sms_keyword", _("SMS keyword")
    IMPORT = "import", _("import")
    API = "api", _("API")
    SHOP_WEBHOOK = "shop_webhook", _("shop webhook")
    ADMIN = "admin", _("admin")
    ESP_EVENT = "esp_event", _("ESP event")
    SUNSET = "sunset", _("sunset policy")


# Only the person themself can lift an unsubscribe or a complaint/erasure suppression, through a
# channel that proves they control the address: their confirmation link, their preference link,
# a text from their phone. A sign-up form proves nothing (anyone can type an address), so it may
# only start a double opt-in (pending), never subscribe past an unsubscribe or a suppression.
PERSON_SOURCES = {ConsentSource.DOUBLE_OPT_IN, ConsentSource.PREFERENCE_CENTER, ConsentSource.SMS_KEYWORD}


def acts_as_the_person(source: str, status: str) -> bool:
    return source in PERSON_SOURCES or (source == ConsentSource.FORM and status == ConsentStatus.PENDING)


def text_sha256(text: str) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest() if text else ""


class AppendOnly(models.Model):
    """Rows that are written once and never edited: proof must not change after the fact."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise RuntimeError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)


class Consent(models.Model):
    """The current marketing consent of one contact on one channel (derived from the log)."""

    # No index of its own: the unique (contact, channel) index serves every look-up by contact, and
    # a second index on the same leading column only cost each import write (B1).
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consents", db_index=False)
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    status = models.CharField(_("status"), max_length=16, choices=ConsentStatus.choices,
                              default=ConsentStatus.NEVER_ASKED)
    changed_at = models.DateTimeField(_("changed"), default=timezone.now)
    source = models.CharField(_("source"), max_length=20, choices=ConsentSource.choices, blank=True)

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        constraints = [models.UniqueConstraint(fields=["contact", "channel"], name="consent_one_per_channel")]
        indexes = [models.Index(fields=["channel", "status"], name="consent_channel_status_idx")]

    def __str__(self) -> str:
        return f"{self.contact} · {self.channel}: {self.status}"


class ConsentEvent(AppendOnly):
    """One entry of the append-only consent log, with the proof GDPR Art. 7(1) asks for."""

    # No index of its own: consentevent_contact_idx (contact, channel, recorded_at) serves look-ups by
    # contact, and a second index on the same leading column only cost each import write (B1).
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_events", db_index=False)
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    status = models.CharField(_("status after"), max_length=16, choices=ConsentStatus.choices)
    previous_status = models.CharField(_("status before"), max_length=16, choices=ConsentStatus.choices)
    source = models.CharField(_("how"), max_length=20, choices=ConsentSource.choices)
    accepted = models.BooleanField(_("applied"), default=True,
                                   help_text=_("False when a statement was recorded but not applied "
                                               "(e.g. an import trying to resubscribe an unsubscribed person)."))
    note = models.CharField(_("note"), max_length=255, blank=True)
    consent_text = models.TextField(_("consent text shown"), blank=True)
    consent_text_sha256 = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=400, blank=True)
    actor = models.CharField(_("who acted"), max_length=150, blank=True,
                             help_text=_("The person, a staff username, or the system part that acted."))
    proof = models.JSONField(_("other proof"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("when"), default=timezone.now)
    recorded_at = models.DateTimeField(_("recorded"), auto_now_add=True)

    class Meta:
        verbose_name = _("consent event")
        verbose_name_plural = _("consent log")
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["contact", "channel", "recorded_at"], name="consentevent_contact_idx")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.previous_status} → {self.status} ({self.source})"

    def delete(self, *args, **kwargs):
        raise RuntimeError("The consent log is append-only (erasure deletes it with the contact).")


class Preference(models.Model):
    """Marketing topics and frequency chosen in the preference center (default: everything, as news comes)."""

    contact = models.OneToOneField(Contact, on_delete=models.CASCADE, related_name="preference")
    topics = models.JSONField(_("topics"), default=list, blank=True)
    frequency = models.CharField(_("frequency"), max_length=10, choices=Frequency.choices, default=Frequency.NEWS)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("preference")
        verbose_name_plural = _("preferences")

    def __str__(self) -> str:
        return f"{self.contact}: {', '.join(self.topics)} · {self.frequency}"


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", _("hard bounce")
    SOFT_BOUNCES = "soft_bounces", _("repeated soft bounces")
    COMPLAINT = "complaint", _("spam complaint")
    INVALID = "invalid", _("invalid address")
    SUSPECT = "suspect", _("fake or role address")
    ERASED = "erased", _("erased (GDPR)")
    SUNSET = "sunset", _("sunset (no engagement)")
    MANUAL = "manual", _("added by staff")


# Reasons that also stop transactional messages: the address does not work at all.
BLOCKS_TRANSACTIONAL = {SuppressionReason.HARD_BOUNCE, SuppressionReason.INVALID}
# Reasons the person can lift with their own confirmed action (double opt-in, preference center).
PERSON_LIFTABLE = {SuppressionReason.COMPLAINT, SuppressionReason.ERASED, SuppressionReason.SUNSET}


class SuppressionQuerySet(models.QuerySet):
    def active(self) -> "SuppressionQuerySet":
        return self.filter(lifted_at__isnull=True)


class Suppression(models.Model):
    """An address or number not to send to, keyed by a keyed hash so it outlives erasure."""

    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    address_hash = models.CharField(_("address hash"), max_length=64, db_index=True,
                                    help_text=_("HMAC-SHA256 of the normalised address with the site pepper."))
    address = models.CharField(_("address"), max_length=254, blank=True,
                               help_text=_("Kept for staff while the contact exists; blanked by erasure."))
    contact = models.ForeignKey(Contact, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="suppressions")
    reason = models.CharField(_("reason"), max_length=16, choices=SuppressionReason.choices)
    detail = models.CharField(_("detail"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("since"), default=timezone.now)
    lifted_at = models.DateTimeField(_("lifted"), null=True, blank=True)
    lifted_by = models.CharField(_("lifted by"), max_length=150, blank=True)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        verbose_name = _("suppression")
        verbose_name_plural = _("suppression list")
        ordering = ["-created_at"]
        constraints = [
            # One active row per address and reason: replayed webhooks cannot pile up rows.
            models.UniqueConstraint(fields=["channel", "address_hash", "reason"], condition=Q(lifted_at__isnull=True),
                                    name="suppression_one_active_per_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.address or self.address_hash[:12]} · {self.get_reason_display()}"


class SendOutcome(models.TextChoices):
    SENT = "sent", _("sent")
    REFUSED = "refused", _("refused")
    DEFERRED = "deferred", _("deferred")


class SendLog(models.Model):
    """Every send (and every refusal a sender reports): what frequency caps and the reputation guard count."""

    contact = models.ForeignKey(Contact, on_delete=models.SET_NULL, null=True, blank=True, related_name="send_logs")
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    purpose = models.CharField(_("purpose"), max_length=16, choices=Purpose.choices)
    topic = models.CharField(_("topic"), max_length=32, blank=True)
    message_key = models.CharField(_("message key"), max_length=200,
                                   help_text=_("Names the message, e.g. campaign:42 or workflow_run:9/step:3."))
    outcome = models.CharField(_("outcome"), max_length=10, choices=SendOutcome.choices)
    reason = models.CharField(_("reason"), max_length=40)
    at = models.DateTimeField(_("at"), default=timezone.now)

    class Meta:
        verbose_name = _("send log entry")
        verbose_name_plural = _("send log")
        ordering = ["-at"]
        constraints = [
            # record_sent() is idempotent for a retried task: one "sent" row per contact and message.
            models.UniqueConstraint(fields=["contact", "channel", "message_key"], condition=Q(outcome="sent"),
                                    name="sendlog_sent_once"),
        ]
        indexes = [
            # Frequency caps: "marketing sends to contact C on channel X since T".
            models.Index(fields=["contact", "channel", "purpose", "at"], name="sendlog_cap_idx"),
            # Reputation guard: "email sends since T".
            models.Index(fields=["channel", "outcome", "at"], name="sendlog_volume_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_key} → {self.contact_id}: {self.outcome} ({self.reason})"


class EspEventKind(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", _("hard bounce")
    SOFT_BOUNCE = "soft_bounce", _("soft bounce")
    INVALID = "invalid", _("invalid address")
    COMPLAINT = "complaint", _("complaint")
    UNSUBSCRIBED = "unsubscribed", _("unsubscribed at the ESP")
    SUBSCRIBED = "subscribed", _("resubscribed at the ESP (ignored)")
    DEFERRED = "deferred", _("deferred")
    DELIVERED = "delivered", _("delivered")
    OPENED = "opened", _("opened")
    CLICKED = "clicked", _("clicked")
    OTHER = "other", _("other")
    UNKNOWN = "unknown", _("unknown")


class EspEvent(models.Model):
    """A tracking event from an ESP webhook, stored once (replays are dropped by the unique key)."""

    esp = models.CharField(_("ESP"), max_length=40)
    event_key = models.CharField(_("event key"), max_length=200)
    event_type = models.CharField(_("anymail event type"), max_length=20)
    kind = models.CharField(_("classified as"), max_length=16, choices=EspEventKind.choices)
    recipient = models.CharField(_("recipient"), max_length=254, blank=True)
    recipient_hash = models.CharField(max_length=64, blank=True, db_index=True)
    description = models.TextField(_("description"), blank=True)
    raw = models.JSONField(_("raw ESP event"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("occurred"), default=timezone.now)
    received_at = models.DateTimeField(_("received"), auto_now_add=True)

    class Meta:
        verbose_name = _("ESP event")
        verbose_name_plural = _("ESP events")
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["esp", "event_key"], name="espevent_once")]
        indexes = [
            # Soft-bounce counting and sunset engagement per address; reputation rates over time.
            models.Index(fields=["recipient_hash", "kind", "occurred_at"], name="espevent_addr_kind_idx"),
            models.Index(fields=["kind", "occurred_at"], name="espevent_kind_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_type} → {self.kind}"


class SunsetEntry(models.Model):
    """A contact in the sunset segment: no engagement for SUNSET_DAYS; suppressed after the grace period."""

    contact = models.OneToOneField(Contact, on_delete=models.CASCADE, related_name="sunset")
    entered_at = models.DateTimeField(_("entered"), default=timezone.now)
    last_engaged_at = models.DateTimeField(_("last engagement"), null=True, blank=True)
    suppressed_at = models.DateTimeField(_("suppressed"), null=True, blank=True)

    class Meta:
        verbose_name = _("sunset entry")
        verbose_name_plural = _("sunset segment")

    def __str__(self) -> str:
        return f"{self.contact} since {self.entered_at:%Y-%m-%d}"


class SenderPause(models.Model):
    """Marketing on a channel is paused because a reputation rate crossed its limit."""

    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices, default=Channel.EMAIL)
    reason = models.CharField(_("reason"), max_length=255)
    bounce_rate = models.FloatField(_("bounce rate"), default=0)
    complaint_rate = models.FloatField(_("complaint rate"), default=0)
    sends = models.PositiveIntegerField(_("sends in window"), default=0)
    paused_at = models.DateTimeField(_("paused"), default=timezone.now)
    resumed_at = models.DateTimeField(_("resumed"), null=True, blank=True)
    resumed_by = models.CharField(_("resumed by"), max_length=150, blank=True)

    class Meta:
        verbose_name = _("sender pause")
        verbose_name_plural = _("sender pauses")
        ordering = ["-paused_at"]
        constraints = [
            models.UniqueConstraint(fields=["channel"], condition=Q(resumed_at__isnull=True),
                                    name="senderpause_one_active_per_channel"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}: {self.reason}"


class UnsubscribeFeedback(models.Model):
    """Optional reasons given after unsubscribing (never a condition of it)."""

    class Reason(models.TextChoices):
        TOO_MANY = "too_many", _("Too many messages")
        NOT_RELEVANT = "not_relevant", _("The content is not relevant to me")
        NEVER_SIGNED_UP = "never_signed_up", _("I never signed up")
        OTHER = "other", _("Another reason")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="unsubscribe_feedback")
    reasons = models.JSONField(_("reasons"), default=list)
    comment = models.TextField(_("comment"), blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("unsubscribe feedback")
        verbose_name_plural = _("unsubscribe feedback")

    def __str__(self) -> str:
        return ", ".join(self.reasons) or self.comment[:40]


class ErasureRecord(AppendOnly):
    """Audit entry of a GDPR/CCPA erasure: what was done, by whom, with no personal data."""

    contact_pk = models.PositiveBigIntegerField(_("former contact id"))
    erased_at = models.DateTimeField(_("erased"), default=timezone.now)
    actor = models.CharField(_("requested by"), max_length=150)
    request_reference = models.CharField(_("request reference"), max_length=200, blank=True)
    summary = models.JSONField(_("what was removed"), default=dict)

    class Meta:
        verbose_name = _("erasure record")
        verbose_name_plural = _("erasure records")
        ordering = ["-erased_at"]

    def __str__(self) -> str:
        return f"contact {self.contact_pk} erased {self.erased_at:%Y-%m-%d}"
