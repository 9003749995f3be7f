from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from channels.models import (
    DiscountCode,
    Message,
    MessageStatus,
    PushSubscription,
    SendRateLimit,
    Template,
    TemplateVersion,
)
from channels.preview import preview_for, send_test
from channels.rendering import validate_template
from channels.services import template_save_version
from channels.sms import sms_info
from segments.admin import CappedCountPaginator
from segments.models import Contact


class TemplateForm(forms.ModelForm):
    class Meta:
        model = Template
        fields = ["name", "channel", "purpose", "topic", *Template.CONTENT_FIELDS, "sms_max_segments"]
        widgets = {"html_body": forms.Textarea(attrs={"rows": 18, "style": "font-family:monospace;width:90%"}),
                   "text_body": forms.Textarea(attrs={"rows": 6, "style": "font-family:monospace;width:90%"}),
                   "sms_body": forms.Textarea(attrs={"rows": 3})}

    def clean(self):
        data = super().clean()
        for field in Template.CONTENT_FIELDS:
            error = validate_template(data.get(field) or "")
            if error:
                self.add_error(field, _("Template error: %(error)s") % {"error": error})
        if data.get("channel") == "email" and not (data.get("subject") and data.get("html_body")):
            raise forms.ValidationError(_("An email template needs a subject and an HTML body."))
        if data.get("channel") == "sms" and not data.get("sms_body"):
            self.add_error("sms_body", _("An SMS template needs its text."))
        if data.get("channel") == "push" and not (data.get("push_title") and data.get("push_body")):
            raise forms.ValidationError(_("A push template needs a title and a text."))
        return data


class PreviewForm(forms.Form):
    contact = forms.ModelChoiceField(Contact.objects.all(), widget=forms.TextInput, required=False,
                                     label=_("Contact id"), help_text=_("Preview with this contact's data."))
    send_to = forms.CharField(required=False, label=_("Send me a test at"),
                              help_text=_("An email address or a phone number in E.164 (+60...)."))


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    form = TemplateForm
    list_display = ["name", "channel", "purpose", "topic", "version", "updated_at", "preview_link"]
    list_filter = ["channel", "purpose"]
    search_fields = ["name", "subject", "sms_body"]
    readonly_fields = ["version", "sms_estimate"]
    fieldsets = [
        (None, {"fields": ["name", "channel", "purpose", "topic", "version"]}),
        (_("Email"), {"fields": ["subject", "preheader", "html_body", "text_body"]}),
        (_("SMS"), {"fields": ["sms_body", "sms_max_segments", "sms_estimate"]}),
        (_("Web push"), {"fields": ["push_title", "push_body", "push_url"]}),
    ]

    @admin.display(description=_("preview"))
    def preview_link(self, obj: Template) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:channels_template_preview", args=[obj.pk]),
                           _("preview / send a test"))

    @admin.display(description=_("SMS size"))
    def sms_estimate(self, obj: Template) -> str:
        if not obj.sms_body:
            return "—"
        info = sms_info(obj.sms_body)
        text = _("%(n)d segment(s), %(enc)s, %(units)d characters (before personalisation)") % {
            "n": info.segments, "enc": info.encoding, "units": info.units}
        if info.segments > obj.sms_max_segments:
            return format_html('<strong style="color:#b00">{} — {}</strong>', text,
                               _("longer than the %(max)d segments allowed") % {"max": obj.sms_max_segments})
        return text

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        template_save_version(obj)
        info = sms_info(obj.sms_body) if obj.sms_body else None
        if info and info.segments > obj.sms_max_segments:
            self.message_user(request, _("This SMS is %(n)d segments long (warning above %(max)d): each costs extra.")
                              % {"n": info.segments, "max": obj.sms_max_segments}, messages.WARNING)

    def get_urls(self):
        return [path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view),
                     name="channels_template_preview"), *super().get_urls()]

    def preview_view(self, request: HttpRequest, pk: int):
        template = get_object_or_404(Template, pk=pk)
        if not self.has_view_permission(request, template):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = PreviewForm(request.POST or request.GET or None)
        contact = None
        if form.is_bound and form.is_valid():
            contact = form.cleaned_data["contact"]
        contact = contact or Contact.objects.filter(orders_count__gt=0).order_by("-last_order_at").first() \
            or Contact.objects.first()
        preview = preview_for(template, contact) if contact else None
        if request.method == "POST" and form.is_valid() and form.cleaned_data["send_to"]:
            if not self.has_change_permission(request, template):
                from django.core.exceptions import PermissionDenied

                raise PermissionDenied
            ok, note = send_test(template, form.cleaned_data["send_to"], contact=contact,
                                 requested_by=request.user.get_username())
            self.message_user(request, note, messages.SUCCESS if ok else messages.ERROR)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "template_obj": template,
                   "form": form, "contact": contact, "preview": preview, "title": _("Preview: %s") % template.name}
        return TemplateResponse(request, "admin/channels/template/preview.html", context)


@admin.register(TemplateVersion)
class TemplateVersionAdmin(admin.ModelAdmin):
    list_display = ["template", "version", "created_at"]
    list_select_related = ["template"]
    readonly_fields = ["template", "version", "content", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False


class StatusFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return MessageStatus.choices

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "contact", "channel", "template", "status", "gate_reason", "origin", "created_at", "sent_at"]
    list_filter = [StatusFilter, "channel", "purpose", "template", "created_at"]
    list_select_related = ["contact", "template"]
    search_fields = ["=contact__email", "=idempotency_key", "=provider_message_id", "origin"]
    raw_id_fields = ["contact", "template"]
    ordering = ["-id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = [f.name for f in Message._meta.fields if f.name != "id"]

    def has_add_permission(self, request) -> bool:
        return False  # messages are made by flows, campaigns and test sends, not by hand


@admin.register(PushSubscription)
class PushSubscriptionAdmin(admin.ModelAdmin):
    list_display = ["contact", "created_at", "last_success_at", "user_agent"]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]


@admin.register(DiscountCode)
class DiscountCodeAdmin(admin.ModelAdmin):
    list_display = ["code", "contact", "percent", "origin", "expires_at", "redeemed_at"]
    list_select_related = ["contact"]
    search_fields = ["code", "contact__email"]
    raw_id_fields = ["contact"]


@admin.register(SendRateLimit)
class SendRateLimitAdmin(admin.ModelAdmin):
    list_display = ["channel", "per_second"]
    list_editable = ["per_second"]
    fields = ["channel", "per_second"]

    def save_model(self, request, obj, form, change):
        # next_slot belongs to the workers: writing back the value read with the form would undo their
        # reservations made meanwhile.
        changed = [f for f in form.changed_data if f in ("channel", "per_second")]
        if not change:
            obj.save()
        elif changed:
            obj.save(update_fields=changed)
