"""Dynamic segments: a rule tree, its stored membership history, and per-contact scores.

The rule tree format and the condition kinds live in `segments.rules`.
"""

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from segments.models.contacts import Contact


class SegmentQuerySet(models.QuerySet):
    def active(self) -> "SegmentQuerySet":
        return self.filter(is_active=True)


class Segment(models.Model):
    """A named rule over contacts; membership is stored and kept current."""

    name = models.CharField(_("name"), max_length=120, unique=True)
    description = models.TextField(_("description"), blank=True)
    rules = models.JSONField(_("rules"), default=dict,
                             help_text=_('A rule tree: {"all": [...]}, {"any": [...]}, {"not": {...}} or one '
                                         'condition {"kind": ..., ...}. The kinds are listed below the field.'))
    is_active = models.BooleanField(_("active"), default=True,
                                    help_text=_("Inactive segments are not refreshed and emit no events."))
    shipped_key = models.CharField(_("shipped key"), max_length=64, unique=True, null=True, blank=True,
                                   editable=False, help_text=_("Set on segments installed by install_segments."))
    member_count = models.PositiveIntegerField(_("members"), default=0, editable=False)
    rules_changed_at = models.DateTimeField(_("rules changed"), default=timezone.now, editable=False)
    # Freshness, shown in the admin so nobody trusts a stale count.
    last_full_refresh_at = models.DateTimeField(_("last full evaluation"), null=True, blank=True, editable=False)
    last_full_refresh_seconds = models.FloatField(_("full evaluation took (s)"), null=True, blank=True,
                                                  editable=False)
    baseline_rules_at = models.DateTimeField(null=True, blank=True, editable=False,
                                             help_text="rules_changed_at of the last full evaluation.")
    last_incremental_at = models.DateTimeField(_("last incremental update"), null=True, blank=True,
                                               editable=False)
    incremental_lag_seconds = models.FloatField(_("incremental lag (s)"), null=True, blank=True, editable=False,
                                                help_text=_("From the oldest change received to membership "
                                                            "updated, in the last incremental update."))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = SegmentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("segment")
        verbose_name_plural = _("segments")

    def __str__(self) -> str:
        return self.name


class MembershipQuerySet(models.QuerySet):
    def current(self) -> "MembershipQuerySet":
        return self.filter(exited_at__isnull=True)


class SegmentMembership(models.Model):
    """One stay of a contact in a segment; exited_at is empty while the stay lasts. History is kept."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="segment_memberships")
    entered_at = models.DateTimeField(_("entered"))
    exited_at = models.DateTimeField(_("exited"), null=True, blank=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        verbose_name = _("segment membership")
        verbose_name_plural = _("segment memberships")
        constraints = [
            models.UniqueConstraint(fields=["segment", "contact"], condition=Q(exited_at__isnull=True),
                                    name="membership_one_current_stay"),
        ]
        indexes = [
            # "Is contact C currently in segment S" (segment rules, triggers) and the contact page.
            models.Index(fields=["contact", "segment"], condition=Q(exited_at__isnull=True),
                         name="membership_current_contact_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.segment_id}"


class ContactScore(models.Model):
    """RFM quintiles, predicted figures and best send hour of one contact (segments.scoring, segments.clv)."""

    contact = models.OneToOneField(Contact, on_delete=models.CASCADE, primary_key=True, related_name="score")
    rfm_recency = models.PositiveSmallIntegerField(_("R"), null=True, blank=True,
                                                   help_text=_("Quintile 1-5, 5 = most recent order."))
    rfm_frequency = models.PositiveSmallIntegerField(_("F"), null=True, blank=True)
    rfm_monetary = models.PositiveSmallIntegerField(_("M"), null=True, blank=True)
    rfm_at = models.DateTimeField(_("RFM computed"), null=True, blank=True)
    expected_purchases_30 = models.FloatField(_("expected purchases, 30 days"), null=True, blank=True)
    expected_purchases_90 = models.FloatField(_("expected purchases, 90 days"), null=True, blank=True)
    p_alive = models.FloatField(_("probability still active"), null=True, blank=True)
    churn_risk = models.FloatField(_("churn risk"), null=True, blank=True, help_text=_("1 - probability alive."))
    predicted_clv = models.FloatField(_("predicted CLV, 12 months"), null=True, blank=True)
    predicted_at = models.DateTimeField(_("predicted"), null=True, blank=True)
    best_send_hour = models.PositiveSmallIntegerField(_("best send hour"), null=True, blank=True,
                                                      help_text=_("Hour 0-23 in the shop's time zone."))

    class Meta:
        verbose_name = _("contact score")
        verbose_name_plural = _("contact scores")

    def __str__(self) -> str:
        return f"scores of {self.contact_id}"

    @property
    def rfm(self) -> str:
        parts = (self.rfm_recency, self.rfm_frequency, self.rfm_monetary)
        return "".join(str(p) for p in parts) if all(parts) else ""


class ClvFit(models.Model):
    """One fit of the BG/NBD + Gamma-Gamma model (manage.py fit_clv)."""

    as_of = models.DateTimeField(_("orders up to"))
    fitted_at = models.DateTimeField(_("fitted"), default=timezone.now)
    customers = models.PositiveIntegerField(_("customers"))
    repeat_customers = models.PositiveIntegerField(_("repeat customers"))
    r = models.FloatField()
    alpha = models.FloatField()
    a = models.FloatField()
    b = models.FloatField()
    p = models.FloatField(null=True, blank=True)
    q = models.FloatField(null=True, blank=True)
    v = models.FloatField(null=True, blank=True)
    log_likelihood = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-fitted_at"]
        get_latest_by = "fitted_at"
        verbose_name = _("CLV model fit")
        verbose_name_plural = _("CLV model fits")

    def __str__(self) -> str:
        return f"BG/NBD fit as of {self.as_of:%Y-%m-%d}"
