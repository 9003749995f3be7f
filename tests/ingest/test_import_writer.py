"""Committing chunks in a writer thread (segments.ingest.writer, PostgreSQL): the same import as
committing them inline, row for row, progress included; a chunk that fails stops the import there."""

import pytest
from django.db import connection

from compliance import services
from compliance.models import ConsentEvent, SuppressionReason
from segments.ingest import importer as importer_module
from segments.ingest.importer import ImportOptions, import_file
from segments.models import Contact, ContactIdentifier, Tag
from tests.ingest.test_import_pipeline import _messy_file, _outcome

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql", reason="the writer thread is PostgreSQL's")]


def _reset() -> None:
    ConsentEvent.objects.all().delete()
    ContactIdentifier.objects.all().delete()
    Contact.tags.through.objects.all().delete()
    Tag.objects.all().delete()
    Contact.objects.all().delete()
    Contact.objects.create(email="p3@kedai-customer.my", first_name="Old")  # an update
    gone = Contact.objects.create(email="p5@kedai-customer.my")
    services.unsubscribe(contact=gone, channel="email", source="one_click")
    services.suppress(channel="email", address="p8@kedai-customer.my", reason=SuppressionReason.COMPLAINT)


def _import(path, *, threaded: bool, monkeypatch, settings) -> dict:
    settings.IMPORT_CHUNK_ROWS = 37  # many chunks: the same person in the next chunk, and further on
    settings.IMPORT_WRITE_THREAD_BYTES = 0 if threaded else -1
    used = []
    real = importer_module.ChunkWriter

    def spy():
        used.append(True)
        return real()

    monkeypatch.setattr(importer_module, "ChunkWriter", spy)
    _reset()
    progress: list[tuple] = []

    def report(rows, summary):
        progress.append((rows, summary.created, summary.updated, summary.skipped, summary.errors))

    summary = import_file(path, kind="contacts", options=ImportOptions(actor="ana"), progress=report)
    again = import_file(path, kind="contacts", options=ImportOptions(actor="ana"))  # idempotent
    assert bool(used) == threaded
    return _outcome(summary) | {"again": again.line(), "progress": progress}


def test_the_writer_thread_imports_exactly_what_writing_inline_does(tmp_path, monkeypatch, settings):
    path = tmp_path / "messy.csv"
    _messy_file(path, n=600)
    inline = _import(path, threaded=False, monkeypatch=monkeypatch, settings=settings)
    threaded = _import(path, threaded=True, monkeypatch=monkeypatch, settings=settings)
    assert inline["line"].startswith("created ") and inline["events"] and inline["tags"] and len(inline["progress"]) > 10
    assert "updated 0" not in inline["again"] or "skipped 0" not in inline["again"]
    assert threaded == inline


@pytest.mark.parametrize("threaded", [False, True])
def test_a_chunk_that_fails_stops_the_import_with_the_chunks_before_it_committed(
        tmp_path, monkeypatch, settings, threaded):
    path = tmp_path / "messy.csv"
    _messy_file(path, n=300)
    settings.IMPORT_CHUNK_ROWS = 50
    settings.IMPORT_WRITE_THREAD_BYTES = 0 if threaded else -1
    _reset()
    before = Contact.objects.count()
    calls = []
    real = importer_module.state_consents

    def failing(statements, **kwargs):
        calls.append(len(statements))
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        real(statements, **kwargs)

    monkeypatch.setattr(importer_module, "state_consents", failing)
    progress = []
    with pytest.raises(RuntimeError, match="went away"):
        import_file(path, kind="contacts", options=ImportOptions(actor="ana"),
                    progress=lambda rows, summary: progress.append(rows))
    assert len(calls) == 3 and progress == [50, 100]  # nothing after the failed chunk, which left nothing
    stored = Contact.objects.count() - before
    assert 0 < stored <= 100
    assert ConsentEvent.objects.filter(proof__line__gt=101).count() == 0
