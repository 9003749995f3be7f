"""django-import-export wiring: the admin's import (preview, then confirm) runs our importer; export is plain.

The import-export resource machinery saves row by row (0.8-1.6k rows/s measured here, see
PERFORMANCE.md 3.3), so ImportResource.import_data hands the whole dataset to
segments.ingest.importer instead and turns its outcomes into import-export's Result for the
preview page. Files above IMPORT_BACKGROUND_ROWS rows go to an ImportJob (a django-q2 task).
"""

import hashlib

from django import forms
from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from import_export import fields, resources
from import_export.admin import ImportExportMixin
from import_export.forms import ConfirmImportForm, ImportForm
from import_export.results import Error, Result, RowResult

from segments.ingest.formats import UnknownLayout
from segments.ingest.importer import ContactImporter, ImportOptions
from segments.ingest.order_importer import OrderImporter
from segments.ingest.reader import open_dataset
from segments.models import Contact, Order


class ConsentFields(forms.Form):
    consent_source = forms.CharField(
        label=_("Consent source"), required=False,
        help_text=_("Only for files without consent columns: where these people agreed to marketing. "
                    "Leave empty and they are imported without marketing consent."))
    consent_basis = forms.CharField(label=_("Consent basis"), required=False,
                                    help_text=_("...and on what basis (the checkbox and its wording)."))
    trigger_flows = forms.BooleanField(
        label=_("Trigger flows"), required=False, initial=False,
        help_text=_("Leave off for history: importing old customers must not send them welcome emails."))

    def clean(self):
        data = super().clean()
        if bool((data.get("consent_source") or "").strip()) != bool((data.get("consent_basis") or "").strip()):
            raise forms.ValidationError(_("State both the consent source and the consent basis, or neither."))
        return data


class IngestImportForm(ConsentFields, ImportForm):
    pass


class IngestConfirmForm(ConsentFields, ConfirmImportForm):
    consent_source = forms.CharField(required=False, widget=forms.HiddenInput())
    consent_basis = forms.CharField(required=False, widget=forms.HiddenInput())
    trigger_flows = forms.BooleanField(required=False, widget=forms.HiddenInput())


class ImportResource(resources.ModelResource):
    importer_class = ContactImporter
    kind = "contacts"

    def __init__(self, consent_source: str = "", consent_basis: str = "", trigger_flows: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.consent = {"consent_source": consent_source or "", "consent_basis": consent_basis or "",
                        "trigger_flows": bool(trigger_flows)}

    def import_data(self, dataset, dry_run=False, raise_errors=False, use_transactions=None,
                    collect_failed_rows=False, rollback_on_validation_errors=False, **kwargs) -> Result:
        result = Result()
        result.diff_headers = ["line", _("who"), _("consent / note")]
        if len(dataset) > settings.IMPORT_BACKGROUND_ROWS:
            url = reverse("admin:segments_importjob_add")
            result.append_base_error(Error(ValueError(
                f"This file has {len(dataset)} rows: files over {settings.IMPORT_BACKGROUND_ROWS} rows run in the "
                f"background with a progress bar. Upload it under Import jobs ({url}).")))
            return result
        user = kwargs.get("user")
        sha = hashlib.sha256(dataset.export("csv").encode()).hexdigest()
        options = ImportOptions(file_name=kwargs.get("file_name") or "", sha256=sha, dry_run=dry_run,
                                actor=user.get_username() if user else "admin", collect_outcomes=True,
                                **self.consent)
        header, rows = open_dataset(dataset)
        try:
            summary = self.importer_class(options).run(header, rows)
        except (UnknownLayout, ValueError) as exc:
            result.append_base_error(Error(exc))
            return result
        for line, kind, who, note in sorted(summary.outcomes):
            row = RowResult()
            # Rows that cannot go in are shown as skipped with their reason: the others still import.
            row.import_type = RowResult.IMPORT_TYPE_SKIP if kind == "error" else kind
            row.diff = [str(line), who, f"ERROR: {note}" if kind == "error" else note]
            row.object_repr = who
            result.append_row_result(row)
            result.increment_row_result_total(row)
        result.totals[RowResult.IMPORT_TYPE_ERROR] = 0  # reported per row above, never as a crash
        result.total_rows = summary.rows
        self.summary = summary
        return result


class ContactResource(ImportResource):
    tags = fields.Field(column_name="tags", attribute="tags", readonly=True)

    class Meta:
        model = Contact
        fields = ("email", "phone", "first_name", "last_name", "country", "locale", "timezone", "tags", "source",
                  "orders_count", "total_spent", "average_order_value", "first_order_at", "last_order_at",
                  "created_at")
        export_order = fields

    def dehydrate_tags(self, contact: Contact) -> str:
        return ", ".join(t.name for t in contact.tags.all())

    def dehydrate_phone(self, contact: Contact) -> str:
        return str(contact.phone or "")


class OrderResource(ImportResource):
    importer_class = OrderImporter
    kind = "orders"
    contact_email = fields.Field(column_name="email", attribute="contact__email", readonly=True)

    class Meta:
        model = Order
        fields = ("source", "external_id", "name", "contact_email", "placed_at", "status", "currency", "subtotal",
                  "discount_code", "discount_amount", "shipping", "tax", "total", "refunded_amount")
        export_order = fields


class IngestImportExportMixin(ImportExportMixin):
    """Import with preview and confirm (our importer), export respecting the changelist filters."""

    import_form_class = IngestImportForm
    confirm_form_class = IngestConfirmForm
    skip_admin_log = True

    def get_import_resource_kwargs(self, request, **kwargs) -> dict:
        form = kwargs.get("form")
        data = form.cleaned_data if form is not None and hasattr(form, "cleaned_data") else {}
        return {k: data.get(k) for k in ("consent_source", "consent_basis", "trigger_flows")}

    def get_confirm_form_initial(self, request, import_form) -> dict:
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            for k in ("consent_source", "consent_basis", "trigger_flows"):
                initial[k] = import_form.cleaned_data.get(k)
        return initial

    def get_export_queryset(self, request):
        qs = super().get_export_queryset(request)
        return qs.prefetch_related("tags") if qs.model is Contact else qs.select_related("contact")
