"""The admin: import with preview and confirm, filtered export, background import jobs, API keys."""

import csv
import io

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from segments.models import ApiKey, Contact, ImportJob

pytestmark = pytest.mark.django_db

CONTACTS = ("email,phone,country,first_name,email_consent\n"
            "ana@example.com,0123456789,MY,Ana,yes\n"
            "nobody,,,Nobody,\n"
            "ben@example.com,,,Ben,\n")


def choice(form, field: str, label: str) -> str:
    return next(str(value) for value, text in form.fields[field].choices if text.lower() == label)


def test_import_previews_without_writing_then_confirm_imports(staff_client, consents):
    url = reverse("admin:segments_contact_import")
    form = staff_client.get(url).context["form"]
    upload = SimpleUploadedFile("contacts.csv", CONTACTS.encode(), content_type="text/csv")
    r = staff_client.post(url, {"import_file": upload, "format": choice(form, "format", "csv"),
                                "resource": "0"})
    assert r.status_code == 200
    result = r.context["result"]
    assert [(row.import_type, row.diff[0]) for row in result.rows] == [("new", "2"), ("skip", "3"), ("new", "4")]
    assert "ERROR: email 'nobody' is not a valid address" in result.rows[1].diff[2]
    assert Contact.objects.count() == 0 and consents.calls == []  # the preview wrote nothing
    confirm = r.context["confirm_form"]
    data = {name: confirm.initial.get(name, "") for name in confirm.fields}
    data["trigger_flows"] = ""
    r = staff_client.post(reverse("admin:segments_contact_process_import"), data)
    assert r.status_code == 302
    assert set(Contact.objects.values_list("email", flat=True)) == {"ana@example.com", "ben@example.com"}
    (call,) = consents.calls
    assert call["proof"]["actor"] == "admin" and call["proof"]["file"] == "contacts.csv"


def test_import_form_requires_both_consent_source_and_basis(staff_client):
    url = reverse("admin:segments_contact_import")
    form = staff_client.get(url).context["form"]
    upload = SimpleUploadedFile("c.csv", b"email\na@example.com\n", content_type="text/csv")
    r = staff_client.post(url, {"import_file": upload, "format": choice(form, "format", "csv"), "resource": "0",
                                "consent_source": "popup"})
    assert "State both the consent source and the consent basis" in r.content.decode()


def _export(staff_client, query: str, fmt: str):
    url = reverse("admin:segments_contact_export") + query
    form = staff_client.get(url).context["form"]
    data = {"format": choice(form, "format", fmt), "resource": "0"}
    data.update({name: "on" for name, f in form.fields.items() if getattr(f, "is_selectable_field", False)})
    return staff_client.post(url, data)


def test_export_respects_the_changelist_filters_as_csv_and_xlsx(staff_client):
    Contact.objects.create(email="mail@example.com")
    Contact.objects.create(phone="+60123456789")
    r = _export(staff_client, "?reach=email", "csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["email"] for row in rows] == ["mail@example.com"]
    r = _export(staff_client, "?reach=sms", "xlsx")
    sheet = openpyxl.load_workbook(io.BytesIO(r.content)).active
    values = list(sheet.values)
    header = list(values[0])
    assert len(values) == 2 and values[1][header.index("phone")] == "+60123456789"


def test_a_large_file_runs_as_a_background_job_with_progress_and_a_report(staff_client, monkeypatch, settings,
                                                                         tmp_path, django_capture_on_commit_callbacks):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # the django-q2 task runs in-process, right after commit
    settings.MEDIA_ROOT = tmp_path
    settings.IMPORT_CHUNK_ROWS = 5
    lines = ["email,first_name"] + [f"user{i}@example.com,User {i}" for i in range(23)] + ["broken,Broken"]
    upload = SimpleUploadedFile("big.csv", ("\n".join(lines) + "\n").encode(), content_type="text/csv")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r = staff_client.post(reverse("admin:segments_importjob_add"), {"kind": "contacts", "file": upload})
    assert r.status_code == 302 and len(callbacks) == 1
    job = ImportJob.objects.get()
    job.refresh_from_db()
    assert (job.status, job.total_rows, job.rows_done, job.created, job.errors) == ("done", 24, 24, 23, 1)
    page = staff_client.get(reverse("admin:segments_importjob_change", args=[job.pk])).content.decode()
    assert '<progress value="100" max="100"' in page and "24 / 24 rows, 1 error(s)" in page
    report = staff_client.get(reverse("admin:segments_importjob_report", args=[job.pk]))
    body = b"".join(report.streaming_content).decode()
    assert "25,error,email 'broken' is not a valid address" in body
    assert Contact.objects.count() == 23


def test_a_file_too_big_for_the_request_points_to_import_jobs(staff_client, settings):
    settings.IMPORT_BACKGROUND_ROWS = 2
    url = reverse("admin:segments_contact_import")
    form = staff_client.get(url).context["form"]
    upload = SimpleUploadedFile("c.csv", CONTACTS.encode(), content_type="text/csv")
    r = staff_client.post(url, {"import_file": upload, "format": choice(form, "format", "csv"), "resource": "0"})
    assert "run in the background" in r.content.decode()
    assert Contact.objects.count() == 0


def test_an_api_key_is_shown_once_and_stored_hashed(staff_client):
    r = staff_client.post(reverse("admin:segments_apikey_add"), {"name": "checkout server"}, follow=True)
    shown = [str(m) for m in r.context["messages"]]
    raw = next(m.split("<code>")[1].split("</code>")[0] for m in shown if "<code>" in m)
    key = ApiKey.objects.get()
    assert raw.startswith(key.prefix) and raw not in key.key_hash
    page = staff_client.get(reverse("admin:segments_apikey_change", args=[key.pk])).content.decode()
    assert raw not in page
    staff_client.post(reverse("admin:segments_apikey_changelist"),
                      {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_ingestion_admin_pages_render(staff_client):
    for name in ("segments_importjob_changelist", "segments_importjob_add", "segments_webhookdelivery_changelist",
                 "segments_apikey_changelist", "segments_contact_changelist", "segments_order_changelist"):
        assert staff_client.get(reverse(f"admin:{name}")).status_code == 200, name


def test_order_history_imports_through_the_admin_with_preview(staff_client, shop):
    from segments.models import Order

    url = reverse("admin:segments_order_import")
    form = staff_client.get(url).context["form"]
    text = ("Name,Email,Financial Status,Created at,Currency,Total,Lineitem quantity,Lineitem name,Lineitem price,"
            "Lineitem sku,Id\n#2001,lee@example.com,paid,2024-03-01 10:00:00 +0800,MYR,30.00,1,Mug,30.00,MUG-1,99\n")
    upload = SimpleUploadedFile("orders_export.csv", text.encode(), content_type="text/csv")
    r = staff_client.post(url, {"import_file": upload, "format": choice(form, "format", "csv"), "resource": "0"})
    assert [(row.import_type, row.diff[1]) for row in r.context["result"].rows] == [("new", "#2001")]
    assert Order.objects.count() == 0
    confirm = r.context["confirm_form"]
    data = {name: confirm.initial.get(name, "") for name in confirm.fields}
    data["trigger_flows"] = ""
    staff_client.post(reverse("admin:segments_order_process_import"), data)
    order = Order.objects.get(external_id="99")
    assert order.contact.email == "lee@example.com" and order.contact.orders_count == 1
