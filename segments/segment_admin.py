"""Admin for segments: build a rule, see the count while editing, list and export members.

Imported at the bottom of segments/admin.py. It also re-registers the contact admin as a subclass,
adding the contact's scores, its segment history and a "segment" filter, without touching that code.
"""

import csv
import hashlib
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from segments import rules as engine
from segments.admin import ContactAdmin
from segments.membership import segment_preview_count, segment_refresh, segment_rules_changed
from segments.models import ClvFit, Contact, ContactScore, Segment, SegmentMembership
from segments.models.contacts import normalize_email
from segments.services import SegmentInUse, segment_delete, segments_using


def rules_error(rules, *, segment_id: int | None) -> str | None:
    """The first problem with a rule tree, in words for the shop owner, or None."""
    try:
        cleaned = engine.validate(rules)
        engine.check_cycles(cleaned, segment_id=segment_id)
        engine.to_q(cleaned, engine.Context())  # compiles references too (a deleted segment, a cycle)
    except engine.RuleError as e:
        return str(e)
    return None


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = ["name", "description", "rules", "is_active"]
        widgets = {"rules": forms.Textarea(attrs={"rows": 14, "cols": 100, "style": "font-family: monospace"})}

    def clean_rules(self):
        rules = self.cleaned_data["rules"]
        problem = rules_error(rules, segment_id=self.instance.pk)
        if problem:
            raise ValidationError(problem)
        return engine.validate(rules)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class Echo:
    def write(self, value: str) -> str:
        return value


def _csv_response(rows, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(Echo())
    response = StreamingHttpResponse((writer.writerow(r) for r in rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ["name", "members_link", "freshness", "is_active", "shipped"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    readonly_fields = ["members_link", "freshness", "exports", "rule_kinds"]
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active"]}),
        (_("Rule"), {"fields": ["rules", "rule_kinds"]}),
        (_("Members"), {"fields": ["members_link", "freshness", "exports"]}),
    ]
    actions = ["refresh_now"]
    change_form_template = "admin/segments/segment/change_form.html"

    def get_urls(self):
        own = [
            path("preview/", self.admin_site.admin_view(self.preview_view), name="segments_segment_preview"),
            path("<int:pk>/members.csv", self.admin_site.admin_view(self.export_view),
                 name="segments_segment_export"),
            path("<int:pk>/members-hashed.csv", self.admin_site.admin_view(self.export_hashed_view),
                 name="segments_segment_export_hashed"),
        ]
        return own + super().get_urls()

    @admin.display(description=_("shipped"), boolean=True)
    def shipped(self, obj: Segment) -> bool:
        return bool(obj.shipped_key)

    @admin.display(description=_("members"), ordering="member_count")
    def members_link(self, obj: Segment) -> str:
        if not obj.pk:
            return "—"
        url = reverse("admin:segments_contact_changelist") + f"?segment={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.member_count)

    @admin.display(description=_("freshness"))
    def freshness(self, obj: Segment) -> str:
        if not obj.last_full_refresh_at:
            return _("never evaluated")
        full = format_html(_("full evaluation {} ago ({} s)"), timesince(obj.last_full_refresh_at),
                           f"{obj.last_full_refresh_seconds or 0:.2f}")
        if not obj.last_incremental_at:
            return full
        lag = f"{obj.incremental_lag_seconds:.1f} s" if obj.incremental_lag_seconds is not None else "—"
        return format_html(_("{}; incremental update {} ago, lag {}"), full, timesince(obj.last_incremental_at), lag)

    @admin.display(description=_("export"))
    def exports(self, obj: Segment) -> str:
        if not obj.pk:
            return "—"
        return format_html(
            '<a href="{}">{}</a> · <a href="{}">{}</a>',
            reverse("admin:segments_segment_export", args=[obj.pk]), _("members (CSV)"),
            reverse("admin:segments_segment_export_hashed", args=[obj.pk]),
            _("hashed emails for ad audiences (SHA-256, CSV)"))

    @admin.display(description=_("condition kinds"))
    def rule_kinds(self, obj: Segment) -> str:
        return format_html("<dl>{}</dl>", format_html_join(
            "", "<dt><b>{}</b> — {}</dt><dd><code>{}</code></dd>",
            ((k.name, k.label, k.help) for k in engine.all_kinds())))

    def save_model(self, request, obj: Segment, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change or "rules" in form.changed_data or "is_active" in form.changed_data:
            result = segment_rules_changed(segment=obj)
            obj.refresh_from_db()
            self.message_user(request, _("%(name)s has %(n)d member(s) now.") % {"name": obj.name,
                                                                                  "n": obj.member_count})
            del result

    def get_deleted_objects(self, objs, request):
        """A segment another segment's rule uses is listed as protected: the admin refuses, saying which rule."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        names = {o.pk: o.name for o in objs}
        for seg_id, users in segments_using(segment_ids=names).items():
            protected = [*protected, *(_("segment “%(user)s”, whose rule uses “%(used)s”") % {
                "user": u.name, "used": names[seg_id]} for u in users)]
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj: Segment) -> None:
        segment_delete(segment=obj)

    def delete_queryset(self, request, queryset: QuerySet[Segment]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        used = segments_using(segment_ids=ids)
        if used:
            seg_id, users = next(iter(used.items()))
            raise SegmentInUse(Segment.objects.get(pk=seg_id), users)
        super().delete_queryset(request, queryset)

    @admin.action(description=_("Re-evaluate membership now"))
    def refresh_now(self, request, queryset: QuerySet[Segment]) -> None:
        results = [segment_refresh(segment=s) for s in queryset]
        self.message_user(request, _("Re-evaluated %(n)d segment(s): %(in)d entered, %(out)d left.") % {
            "n": len(results), "in": sum(len(r.entered) for r in results),
            "out": sum(len(r.exited) for r in results)}, messages.SUCCESS)

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """POST the rules JSON (and the segment id when editing): the member count now, or the problem."""
        if request.method != "POST" or not self.has_view_permission(request):
            return HttpResponseBadRequest("POST the rules")
        try:
            rules = json.loads(request.POST.get("rules", ""))
        except ValueError as e:
            return JsonResponse({"error": f"not valid JSON: {e}"}, status=400)
        seg_id = request.POST.get("segment")
        problem = rules_error(rules, segment_id=int(seg_id) if seg_id and seg_id.isdigit() else None)
        if problem:
            return JsonResponse({"error": problem}, status=400)
        return JsonResponse({"count": segment_preview_count(engine.validate(rules))})

    def _members(self, pk: int) -> QuerySet[Contact]:
        current = SegmentMembership.objects.filter(segment_id=pk, contact=OuterRef("pk"), exited_at__isnull=True)
        return Contact.objects.filter(Exists(current)).order_by("pk")

    def export_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        segment = get_object_or_404(Segment, pk=pk)
        rows = self._members(pk).values_list("pk", "email", "phone", "first_name", "last_name", "country", "locale")
        header = [("contact_id", "email", "phone", "first_name", "last_name", "country", "locale")]
        return _csv_response(
            (*header, *((i, e or "", p or "", f, la, c, lo) for i, e, p, f, la, c, lo in rows.iterator(2000))),
            f"segment-{segment.pk}-members.csv")

    def export_hashed_view(self, request: HttpRequest, pk: int) -> StreamingHttpResponse:
        """Customer-match audiences: SHA-256 of the trimmed, lower-cased email (and of the E.164 phone)."""
        segment = get_object_or_404(Segment, pk=pk)
        rows = self._members(pk).values_list("email", "phone")

        def lines():
            yield ("email_sha256", "phone_sha256")
            for email, phone in rows.iterator(2000):
                email = normalize_email(email)
                yield (sha256_hex(email) if email else "", sha256_hex(str(phone)) if phone else "")

        return _csv_response(lines(), f"segment-{segment.pk}-hashed.csv")


class SegmentMemberFilter(admin.SimpleListFilter):
    title = _("segment")
    parameter_name = "segment"

    def lookups(self, request, model_admin):
        return [(str(pk), name) for pk, name in Segment.objects.values_list("pk", "name")]

    def queryset(self, request, queryset):
        if not (self.value() or "").isdigit():
            return queryset
        current = SegmentMembership.objects.filter(segment_id=int(self.value()), contact=OuterRef("pk"),
                                                   exited_at__isnull=True)
        return queryset.filter(Exists(current))


class ContactScoreInline(admin.StackedInline):
    model = ContactScore
    can_delete = False
    extra = 0
    readonly_fields = ["rfm", "rfm_recency", "rfm_frequency", "rfm_monetary", "expected_purchases_30",
                       "expected_purchases_90", "p_alive", "churn_risk", "predicted_clv", "best_send_hour",
                       "rfm_at", "predicted_at"]
    fields = [("rfm", "rfm_recency", "rfm_frequency", "rfm_monetary"),
              ("expected_purchases_30", "expected_purchases_90"), ("p_alive", "churn_risk", "predicted_clv"),
              "best_send_hour", ("rfm_at", "predicted_at")]
    verbose_name = verbose_name_plural = _("RFM and predicted figures")

    @admin.display(description=_("RFM"))
    def rfm(self, obj: ContactScore) -> str:
        return obj.rfm or "—"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    model = SegmentMembership
    extra = 0
    can_delete = False
    fields = ["segment", "entered_at", "exited_at"]
    readonly_fields = fields
    ordering = ["exited_at", "-entered_at"]
    verbose_name_plural = _("segments (current and past)")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("segment")


admin.site.unregister(Contact)


@admin.register(Contact)
class ContactWithSegmentsAdmin(ContactAdmin):
    list_filter = [*ContactAdmin.list_filter, SegmentMemberFilter]

    def get_inlines(self, request, obj):
        # Read the base admin's inlines at request time: other apps (compliance's consent inline)
        # add theirs to ContactAdmin after this subclass was defined.
        return [*super().get_inlines(request, obj), ContactScoreInline, MembershipInline]


@admin.register(ClvFit)
class ClvFitAdmin(admin.ModelAdmin):
    list_display = ["as_of", "fitted_at", "customers", "repeat_customers", "r", "alpha", "a", "b", "p", "q", "v"]
    readonly_fields = [f.name for f in ClvFit._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
