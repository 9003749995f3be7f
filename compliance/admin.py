import json
from datetime import datetime, time

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from compliance import hygiene, privacy, services
from compliance.forms import RecordConsentForm
from compliance.models import (
    Consent,
    ConsentEvent,
    ConsentSource,
    ErasureRecord,
    EspEvent,
    Preference,
    SenderPause,
    SendLog,
    SunsetEntry,
    Suppression,
    UnsubscribeFeedback,
)
from compliance.services import PROBABLE_OPT_OUT_NOTE
from segments.admin import CappedCountPaginator, ContactAdmin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Proof and logs: staff read them; only the services write them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class NeedsReviewFilter(admin.SimpleListFilter):
    """Free-text SMS opt-outs ("please stop texting me"): honoured at once, listed here for a look."""

    title = _("needs review")
    parameter_name = "review"

    def lookups(self, request, model_admin):
        return [("probable_opt_out", _("probable opt-out in free text"))]

    def queryset(self, request, queryset):
        if self.value() == "probable_opt_out":
            return queryset.filter(note=PROBABLE_OPT_OUT_NOTE)
        return queryset


@admin.register(ConsentEvent)
class ConsentEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "contact", "channel", "previous_status", "status", "source", "accepted", "note"]
    list_filter = [NeedsReviewFilter, "channel", "status", "source", "accepted"]
    search_fields = ["=contact__email", "=contact__phone"]
    list_select_related = ["contact"]
    paginator = CappedCountPaginator
    show_full_result_count = False


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdmin):
    list_display = ["contact", "channel", "status", "changed_at", "source"]
    list_filter = ["channel", "status", "source"]
    search_fields = ["=contact__email", "=contact__phone"]
    list_select_related = ["contact"]
    show_full_result_count = False


@admin.register(Preference)
class PreferenceAdmin(ReadOnlyAdmin):
    list_display = ["contact", "topics", "frequency", "updated_at"]
    list_filter = ["frequency"]
    list_select_related = ["contact"]


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "channel", "reason", "detail", "created_at", "lifted_at"]
    list_filter = ["channel", "reason", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["=address"]
    fields = ["channel", "address", "reason", "detail"]
    actions = ["lift"]
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return ["channel", "address", "reason", "detail"] if obj else []

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            row = services.suppress(channel=obj.channel, address=obj.address, reason=obj.reason or "manual",
                                    detail=obj.detail or f"added by {request.user}")
            obj.pk, obj.address_hash = row.pk, row.address_hash

    @admin.action(description=_("Lift (staff decision; complaints and erasures stay)"))
    def lift(self, request, queryset) -> None:
        n = queryset.active().exclude(reason__in=["complaint", "erased"]).update(
            lifted_at=timezone.now(), lifted_by=str(request.user))
        self.message_user(request, _("Lifted %(n)d suppression(s).") % {"n": n}, messages.SUCCESS)


@admin.register(SendLog)
class SendLogAdmin(ReadOnlyAdmin):
    list_display = ["at", "contact", "channel", "purpose", "topic", "message_key", "outcome", "reason"]
    list_filter = ["channel", "purpose", "outcome", "reason"]
    search_fields = ["=contact__email", "=contact__phone", "message_key"]
    list_select_related = ["contact"]
    paginator = CappedCountPaginator
    show_full_result_count = False


@admin.register(EspEvent)
class EspEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "esp", "event_type", "kind", "recipient", "short_description"]
    list_filter = ["esp", "kind", "event_type"]
    search_fields = ["=recipient"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description=_("description"))
    def short_description(self, obj: EspEvent) -> str:
        return obj.description[:80]  # escaped by the admin: ESP strings are untrusted


@admin.register(SunsetEntry)
class SunsetEntryAdmin(ReadOnlyAdmin):
    list_display = ["contact", "entered_at", "suppressed_at"]
    list_select_related = ["contact"]


@admin.register(SenderPause)
class SenderPauseAdmin(ReadOnlyAdmin):
    list_display = ["channel", "reason", "sends", "paused_at", "state"]
    actions = ["resume", "check_now"]

    @admin.display(description=_("state"))
    def state(self, obj: SenderPause) -> str:
        if obj.resumed_at:
            return format_html("{} {}", _("resumed by"), obj.resumed_by)
        return format_html('<strong style="color:#b00">{}</strong>', _("paused"))

    @admin.action(description=_("Resume marketing sends"))
    def resume(self, request, queryset) -> None:
        for pause in queryset.filter(resumed_at__isnull=True):
            hygiene.sender_resume(pause=pause, by=str(request.user))
        self.message_user(request, _("Marketing sends resumed."), messages.SUCCESS)

    @admin.action(description=_("Check the reputation rates now"))
    def check_now(self, request, queryset) -> None:
        r = hygiene.reputation_rates()
        self.message_user(request, _("Last window: %(sends)d sends, bounce rate %(b).2f%%, complaint rate %(c).3f%%.")
                          % {"sends": r["sends"], "b": r["bounce_rate"] * 100, "c": r["complaint_rate"] * 100})


@admin.register(UnsubscribeFeedback)
class UnsubscribeFeedbackAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "contact", "reasons", "comment"]
    list_select_related = ["contact"]


@admin.register(ErasureRecord)
class ErasureRecordAdmin(ReadOnlyAdmin):
    list_display = ["erased_at", "contact_pk", "actor", "request_reference", "summary"]


# Privacy and consent actions on the contact list (segments owns ContactAdmin; compliance adds to it).

@admin.action(description=_("Export personal data (JSON)"))
def export_json(modeladmin, request, queryset) -> HttpResponse:
    data = [privacy.contact_export(c) for c in queryset]
    response = HttpResponse(json.dumps(data[0] if len(data) == 1 else data, indent=2, ensure_ascii=False),
                            content_type="application/json")
    response["Content-Disposition"] = 'attachment; filename="personal-data.json"'
    return response


@admin.action(description=_("Export personal data (PDF, one contact)"))
def export_pdf(modeladmin, request, queryset) -> HttpResponse | None:
    if queryset.count() != 1:
        modeladmin.message_user(request, _("Select exactly one contact for a PDF export."), messages.WARNING)
        return None
    contact = queryset.first()
    response = HttpResponse(privacy.contact_export_pdf(contact), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="personal-data-{contact.pk}.pdf"'
    return response


@admin.action(description=_("Erase personal data (GDPR/CCPA; keeps a suppression hash)"),
              permissions=["delete"])
def erase(modeladmin, request, queryset) -> None:
    n = 0
    for contact in list(queryset):
        privacy.contact_erase(contact=contact, actor=str(request.user), reference="admin action")
        n += 1
    modeladmin.message_user(request, _("Erased %(n)d contact(s); their addresses stay suppressed.") % {"n": n},
                            messages.SUCCESS)


@admin.action(description=_("Unsubscribe from all marketing (on the person's request)"))
def unsubscribe_all(modeladmin, request, queryset) -> None:
    n = sum(services.unsubscribe_all(contact=c, source=ConsentSource.ADMIN, actor=str(request.user))
            for c in queryset)
    modeladmin.message_user(request, _("Recorded %(n)d withdrawal(s).") % {"n": n}, messages.SUCCESS)


@admin.action(description=_("Record consent given in person (paper form, call)"), permissions=["record_consent"])
def record_consent(modeladmin, request, queryset) -> TemplateResponse | None:
    """Staff record consent someone gave them directly. Never lifts an unsubscribe or a suppression:
    the rules are the compliance gate's (source "admin"), and refusals are shown and logged."""
    form = RecordConsentForm(request.POST if "apply" in request.POST else None,
                             initial={"obtained_on": timezone.localdate()})
    if "apply" in request.POST and form.is_valid():
        data = form.cleaned_data
        when = timezone.make_aware(datetime.combine(data["obtained_on"], time(12, 0)))
        accepted, refused = 0, []
        for contact in queryset:
            event = services.consent_record(
                contact=contact, channel=data["channel"], status="subscribed", source=ConsentSource.ADMIN,
                consent_text=data["consent_text"], actor=str(request.user), occurred_at=when,
                proof={"how": data["how"], "reference": data["reference"], "recorded_by": str(request.user)})
            if event is not None and not event.accepted:
                refused.append(f"{contact}: {event.note}")
            elif event is not None:
                accepted += 1
        modeladmin.message_user(request, _("Recorded consent for %(n)d contact(s).") % {"n": accepted},
                                messages.SUCCESS)
        if refused:
            modeladmin.message_user(request, _("Not recorded (only the person can resubscribe): %(who)s")
                                    % {"who": "; ".join(refused[:20])}, messages.WARNING)
        return None
    context = {**modeladmin.admin_site.each_context(request), "opts": modeladmin.model._meta, "form": form,
               "contacts": queryset, "action": "record_consent", "title": _("Record consent given in person"),
               "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME}
    return TemplateResponse(request, "admin/compliance/record_consent.html", context)


def _has_record_consent_permission(self, request: HttpRequest) -> bool:
    return request.user.has_perm("compliance.add_consentevent")


class ConsentInline(admin.TabularInline):
    """Current consent per channel on the contact page (the log is on the timeline and in Consent log)."""

    model = Consent
    extra = 0
    fields = ["channel", "status", "changed_at", "source", "marketing_now"]
    readonly_fields = fields
    can_delete = False

    @admin.display(description=_("marketing now?"))
    def marketing_now(self, obj: Consent) -> str:
        """The gate's answer, so the owner sees at once why she did not get the campaign."""
        from compliance import gate

        d = gate.can_send(contact=obj.contact, channel=obj.channel, purpose="marketing")
        return _("yes") if d.allowed else f"{_('no')}: {d.reason}"
    verbose_name_plural = _("consent (change it through the person's own pages or the actions)")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


ContactAdmin.actions = [*ContactAdmin.actions, export_json, export_pdf, erase, unsubscribe_all, record_consent]
ContactAdmin.has_record_consent_permission = _has_record_consent_permission
ContactAdmin.inlines = [*ContactAdmin.inlines, ConsentInline]
