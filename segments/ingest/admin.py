"""Admin for ingestion: API keys (shown once), import jobs with progress, webhook deliveries."""

from django.contrib import admin, messages
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from segments.ingest.importer import file_sha256
from segments.ingest.reader import count_records
from segments.models import ApiKey, ImportJob, WebhookDelivery


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_by", "created_at", "last_used_at", "state"]
    readonly_fields = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description=_("state"))
    def state(self, obj: ApiKey) -> str:
        return _("revoked") if obj.revoked_at else _("active")

    def save_model(self, request, obj: ApiKey, form, change) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        raw = obj.set_new_secret()
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
        # The only time the key exists in clear: it is not stored, so it cannot be shown again.
        self.message_user(request, format_html(
            _("Copy this key now; it will not be shown again: <code>{}</code>"), raw), messages.WARNING)

    @admin.action(description=_("Revoke the selected keys"))
    def revoke(self, request, queryset) -> None:
        from django.utils import timezone

        n = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, _("Revoked %(n)d key(s).") % {"n": n}, messages.SUCCESS)


PROGRESS_REFRESH = """<script>
  (function () { if (document.querySelector('[data-import-running]')) { setTimeout(function () {
    window.location.reload(); }, 2000); } })();
</script>"""


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["__str__", "kind", "status", "progress", "created", "updated", "skipped", "errors", "created_at"]
    list_filter = ["kind", "status"]
    fields_add = ["kind", "file", "dry_run", "trigger_flows", "consent_source", "consent_basis"]
    readonly_fields = ["kind", "original_name", "layout", "status", "progress", "rows_done", "total_rows", "created",
                       "updated", "skipped", "errors", "report_link", "message", "dry_run", "trigger_flows",
                       "consent_source", "consent_basis", "actor", "created_at", "started_at", "finished_at"]

    def get_fields(self, request, obj=None):
        return self.fields_add if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None or super().has_change_permission(request, obj)

    @admin.display(description=_("progress"))
    def progress(self, obj: ImportJob) -> str:
        running = obj.status in (ImportJob.Status.QUEUED, ImportJob.Status.RUNNING)
        return format_html(
            '<progress value="{}" max="100" {}></progress> {} / {} rows, {} error(s){}', obj.percent,
            format_html("data-import-running") if running else "", obj.rows_done, obj.total_rows or "?", obj.errors,
            format_html(PROGRESS_REFRESH) if running else "")

    @admin.display(description=_("error report"))
    def report_link(self, obj: ImportJob) -> str:
        if not obj.error_report:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:segments_importjob_report", args=[obj.pk]),
                           _("Download the row report (CSV)"))

    def save_model(self, request, obj: ImportJob, form, change) -> None:
        if change:
            return
        from django_q.tasks import async_task

        obj.actor = request.user
        obj.original_name = obj.file.name.rsplit("/", 1)[-1]
        super().save_model(request, obj, form, change)
        obj.sha256 = file_sha256(obj.file.path)
        obj.total_rows = count_records(obj.file.path)
        obj.save(update_fields=["sha256", "total_rows"])
        transaction.on_commit(lambda: async_task("segments.ingest.tasks.run_import_job", obj.pk,
                                                 task_name=f"import job {obj.pk}"))
        self.message_user(request, _("The import runs in the background; this page shows its progress."))

    def response_add(self, request, obj, post_url_continue=None):
        return super().response_add(request, obj, reverse("admin:segments_importjob_change", args=[obj.pk]))

    def get_urls(self):
        return [path("<int:pk>/report/", self.admin_site.admin_view(self.report_view),
                     name="segments_importjob_report"), *super().get_urls()]

    def report_view(self, request: HttpRequest, pk: int) -> FileResponse:
        job = ImportJob.objects.filter(pk=pk).first()
        if job is None or not job.error_report or not self.has_view_permission(request, job):
            raise Http404
        return FileResponse(job.error_report.open("rb"), as_attachment=True,
                            filename=f"import-{job.pk}-report.csv")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["topic", "platform", "shop_domain", "status", "received_at", "processed_at"]
    list_filter = ["platform", "status", "topic"]
    search_fields = ["=delivery_id"]
    readonly_fields = ["platform", "delivery_id", "topic", "shop_domain", "payload", "status", "error",
                       "received_at", "processed_at"]
    actions = ["reprocess"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description=_("Process the selected deliveries again"))
    def reprocess(self, request, queryset) -> None:
        from segments.ingest.tasks import process_delivery

        ids = list(queryset.values_list("pk", flat=True))
        WebhookDelivery.objects.filter(pk__in=ids).update(status=WebhookDelivery.Status.RECEIVED)
        done, failed = 0, 0
        for pk in ids:
            try:
                done += process_delivery(pk) == "processed"
            except Exception:  # recorded on the delivery (status failed, error text)
                failed += 1
        self.message_user(request, _("Processed %(n)d delivery(ies), %(f)d failed.") % {"n": done, "f": failed},
                          messages.WARNING if failed else messages.SUCCESS)
