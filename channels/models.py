"""What was (or will be) sent: templates, the message ledger, push subscriptions, discount codes."""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from compliance.models import Channel, Purpose  # one vocabulary for the gate and the ledger
from segments.models import Contact
from segments.money import AMOUNT_DECIMAL_PLACES


class Template(models.Model):
    """One message design for one channel, editable in the admin; every save is a new version."""

    name = models.SlugField(_("name"), max_length=80, unique=True,
                            help_text=_("Used by workflows and `send_test`, e.g. cart-reminder-1."))
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices, default=Channel.EMAIL)
    purpose = models.CharField(_("purpose"), max_length=16, choices=Purpose.choices, default=Purpose.MARKETING)
    topic = models.CharField(_("topic"), max_length=32, blank=True,
                             help_text=_("Marketing topic for the preference center: promotions, new_products, education."))
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    preheader = models.CharField(_("preheader"), max_length=255, blank=True,
                                 help_text=_("The grey preview line inbox apps show after the subject."))
    html_body = models.TextField(_("HTML body"), blank=True)
    text_body = models.TextField(_("text body"), blank=True, help_text=_("Generated from the HTML when empty."))
    sms_body = models.TextField(_("SMS text"), blank=True)
    sms_max_segments = models.PositiveSmallIntegerField(_("warn above SMS segments"), default=2)
    push_title = models.CharField(_("push title"), max_length=120, blank=True)
    push_body = models.CharField(_("push text"), max_length=300, blank=True)
    push_url = models.URLField(_("push link"), blank=True)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    CONTENT_FIELDS = ("subject", "preheader", "html_body", "text_body", "sms_body", "push_title", "push_body",
                      "push_url")

    class Meta:
        ordering = ["name"]
        verbose_name = _("template")
        verbose_name_plural = _("templates")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_channel_display()})"

    def content(self) -> dict:
        return {f: getattr(self, f) for f in self.CONTENT_FIELDS}


class TemplateVersion(models.Model):
    """The exact content of each version, so a message can always be traced to what was sent."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    content = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["template", "version"], name="template_version_unique")]

    def __str__(self) -> str:
        return f"{self.template.name} v{self.version}"


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    REFUSED = "refused", _("refused by the gate")
    DEFERRED = "deferred", _("deferred by the gate")
    CLAIMED = "claimed", _("claimed by a worker")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    DELIVERED = "delivered", _("delivered")
    OPENED = "opened", _("opened")
    CLICKED = "clicked", _("clicked")
    BOUNCED = "bounced", _("bounced")
    COMPLAINED = "complained", _("complained")
    FAILED = "failed", _("failed")
    UNKNOWN = "unknown", _("unknown (worker died mid-send)")


# Not yet handed over or settled (a message leaves these for good once sent, refused or failed).
# On PostgreSQL a partial index holds the ids of these messages (channels/migrations/0003): the
# minute sweep of dead workers' claims (send_due) and "how many are left" counts read these few,
# not the whole ledger. Without it one such count over a 100k campaign read ~40k heap pages
# (0.1-0.2 s; B4's progress poll alone kept a third of a core of PostgreSQL busy during the send).
# Not on SQLite: it cannot use a partial index for a query with bound parameters.
OPEN_STATUSES = ["queued", "claimed", "sending", "deferred"]


# Later states never move back to earlier ones when provider events arrive out of order.
STATUS_RANK = {s: i for i, s in enumerate([
    MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.SENT,
    MessageStatus.DELIVERED, MessageStatus.OPENED, MessageStatus.CLICKED])}
FINAL_BAD = {MessageStatus.REFUSED, MessageStatus.BOUNCED, MessageStatus.COMPLAINED, MessageStatus.FAILED}


class Message(models.Model):
    """One intended delivery. The unique idempotency key means one step can never make two messages."""

    contact = models.ForeignKey(Contact, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages",
                                verbose_name=_("contact"))
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    template = models.ForeignKey(Template, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages")
    template_version = models.PositiveIntegerField(_("template version"), null=True, blank=True)
    purpose = models.CharField(_("purpose"), max_length=16, choices=Purpose.choices, default=Purpose.MARKETING)
    topic = models.CharField(_("topic"), max_length=32, blank=True)
    # Who asked: "workflow:<id>/step:<id>/run:<id>", "campaign:<id>", "test:<user>"... The automation
    # app (a higher app) stores its step id here without channels importing it.
    origin = models.CharField(_("origin"), max_length=120, blank=True, db_index=True)
    workflow_step_id = models.BigIntegerField(_("workflow step"), null=True, blank=True, db_index=True)
    idempotency_key = models.CharField(_("idempotency key"), max_length=200, unique=True)
    context = models.JSONField(_("extra context"), default=dict, blank=True,
                               help_text=_("Data the step adds to the template: cart, discount, products..."))
    status = models.CharField(_("status"), max_length=12, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    gate_reason = models.CharField(_("gate reason"), max_length=40, blank=True)
    defer_until = models.DateTimeField(_("deferred until"), null=True, blank=True)
    provider = models.CharField(_("provider"), max_length=40, blank=True)
    provider_message_id = models.CharField(_("provider message id"), max_length=200, blank=True)
    links = models.JSONField(_("tracked links"), default=list, blank=True)
    sms_segments = models.PositiveSmallIntegerField(_("SMS segments"), null=True, blank=True)
    cost = models.DecimalField(_("cost"), max_digits=10, decimal_places=4, null=True, blank=True)
    cost_currency = models.CharField(_("cost currency"), max_length=3, blank=True)
    error = models.TextField(_("error"), blank=True)
    # Which task attempt holds the message (see channels.services.messages_send).
    claim = models.CharField(max_length=120, blank=True, editable=False,
                             help_text="host:pid:random of the task attempt holding the message")
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    created_at = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)
    opened_at = models.DateTimeField(_("opened"), null=True, blank=True)
    clicked_at = models.DateTimeField(_("clicked"), null=True, blank=True)
    failed_at = models.DateTimeField(_("failed"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [
            models.Index(fields=["contact", "created_at"], name="message_contact_time_idx"),
            # Provider webhooks look messages up by the provider's id.
            models.Index(fields=["provider_message_id"], condition=~Q(provider_message_id=""),
                         name="message_provider_id_idx"),
            # The deferred-message sweep: "deferred messages due now".
            models.Index(fields=["defer_until"], condition=Q(status="deferred"), name="message_deferred_idx"),
            # PostgreSQL only, made by migration 0003: message_open_idx, the ids of messages still in
            # OPEN_STATUSES (see there).
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} {self.status}"


class PushSubscription(models.Model):
    """A browser's Web Push subscription; having one is the consent for push."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="push_subscriptions")
    endpoint = models.URLField(max_length=800, unique=True)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("push subscription")
        verbose_name_plural = _("push subscriptions")

    def __str__(self) -> str:
        return f"push for {self.contact_id}"


class DiscountCode(models.Model):
    """A code unique to one contact, made when a step asks for one (e.g. the 24 h cart reminder)."""

    code = models.CharField(_("code"), max_length=40, unique=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="discount_codes")
    origin = models.CharField(_("origin"), max_length=120, blank=True)
    percent = models.DecimalField(_("percent off"), max_digits=5, decimal_places=AMOUNT_DECIMAL_PLACES, default=10)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    redeemed_at = models.DateTimeField(_("redeemed"), null=True, blank=True)

    class Meta:
        verbose_name = _("discount code")
        verbose_name_plural = _("discount codes")
        constraints = [models.UniqueConstraint(fields=["contact", "origin"], name="discount_code_once_per_origin")]

    def __str__(self) -> str:
        return self.code


class SendRateLimit(models.Model):
    """A ceiling on messages per second for one channel, shared by every worker on every host.

    The provider's limit (Amazon SES starts new accounts at 1 message/s, Twilio long codes at 1 SMS/s):
    going over it makes the provider refuse or queue messages. Workers reserve hand-over slots on this
    row (channels.throttle) before each message or ESP batch call, so the whole cluster keeps to it.
    No row for a channel: no limit (CHANNELS["RATE_LIMITS"] in the settings creates the rows' defaults).
    """

    channel = models.CharField(max_length=10, choices=Channel.choices, unique=True)
    per_second = models.FloatField(
        help_text=_("At most this many messages per second on this channel, all workers together "
                    "(decimals allowed: 0.5 is one message every 2 seconds)."))
    next_slot = models.FloatField(default=0.0, editable=False,
                                  help_text=_("When the next message may go (Unix time); kept by the workers."))

    class Meta:
        verbose_name = _("sending rate limit")
        constraints = [models.CheckConstraint(condition=Q(per_second__gt=0), name="send_rate_positive")]

    def __str__(self) -> str:
        return f"{self.channel}: {self.per_second:g}/s"
