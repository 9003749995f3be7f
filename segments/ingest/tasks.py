"""django-q2 tasks: process a stored webhook delivery; run a large import with progress."""

from django.core.files.base import ContentFile
from django.utils import timezone

from segments.ingest import webhooks
from segments.ingest.importer import ImportOptions, ImportSummary, import_file
from segments.models import ImportJob, WebhookDelivery


def process_delivery(delivery_id: int) -> str:
    """Map one delivery to our models. Claimed by a conditional UPDATE, so a duplicate task is a no-op."""
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status__in=[WebhookDelivery.Status.RECEIVED, WebhookDelivery.Status.FAILED],
    ).update(status=WebhookDelivery.Status.PROCESSING)
    if claimed != 1:
        return "already processed"
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    try:
        webhooks.process(delivery)
    except Exception as exc:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=WebhookDelivery.Status.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:2000])
        raise  # django-q2 records the failure and retries; the claim above lets a retry run
    WebhookDelivery.objects.filter(pk=delivery_id).update(status=WebhookDelivery.Status.PROCESSED,
                                                          processed_at=timezone.now(), error="")
    return "processed"


def run_import_job(job_id: int) -> str:
    """Import the job's file, saving progress (rows done, errors so far) after every chunk."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=timezone.now())
    if claimed != 1:
        return "not queued"
    job = ImportJob.objects.get(pk=job_id)

    def progress(rows: int, summary: ImportSummary) -> None:
        ImportJob.objects.filter(pk=job_id).update(rows_done=rows, created=summary.created, updated=summary.updated,
                                                   skipped=summary.skipped, errors=summary.errors)

    options = ImportOptions(file_name=job.original_name, sha256=job.sha256, dry_run=job.dry_run,
                            trigger_flows=job.trigger_flows, consent_source=job.consent_source,
                            consent_basis=job.consent_basis, actor=job.actor.get_username() if job.actor else "admin")
    try:
        summary = import_file(job.file.path, kind=job.kind, options=options, progress=progress)
    except Exception as exc:
        ImportJob.objects.filter(pk=job_id).update(status=ImportJob.Status.FAILED, finished_at=timezone.now(),
                                                   message=str(exc)[:5000])
        return f"failed: {exc}"
    job.refresh_from_db()
    job.layout, job.rows_done, job.status, job.finished_at = summary.layout, summary.rows, ImportJob.Status.DONE, \
        timezone.now()
    job.created, job.updated, job.skipped, job.errors = summary.created, summary.updated, summary.skipped, \
        summary.errors
    job.total_rows = max(job.total_rows, summary.rows)
    job.message = summary.line()
    if summary.report:
        job.error_report.save(f"import-{job.pk}-report.csv", ContentFile(_report_bytes(summary)), save=False)
    job.save()
    return job.message


def _report_bytes(summary: ImportSummary) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["line", "level", "reason"])
    writer.writerows(sorted(summary.report))
    return buf.getvalue().encode()
