"""Parsing in a child process (segments.ingest.pipeline): the same import as parsing inline, row for
row; errors in the child arrive where they happened; a child that dies or hangs is reported."""

import os
import random
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from compliance import services
from compliance.models import Consent, ConsentEvent, SuppressionReason
from segments.ingest import pipeline
from segments.ingest.importer import ImportOptions, import_file
from segments.models import Contact

pytestmark = pytest.mark.django_db

needs_fork = pytest.mark.skipif(not pipeline.available(), reason="no fork on this platform")


class _Undo(Exception):
    pass


def _messy_file(path, n: int = 400) -> None:
    """Valid rows, invalid ones, the same person again (other case, by phone), shared phones,
    bad phones next to good emails, consent yes/no/unsubscribed/cleaned, custom columns."""
    rng = random.Random(7)
    lines = ["email,phone,first_name,country,email_consent,sms_consent,consent_at,consent_text,tier,tags"]
    for i in range(n):
        email, phone = f"p{i}@kedai-customer.my", f"+6012{i:07d}"
        kind = rng.random()
        if kind < 0.05:
            email = f"broken-{i}"
            phone = ""
        elif kind < 0.12:
            j = rng.randrange(i + 1)
            email, phone = f" P{j}@Kedai-Customer.MY ", ""
        elif kind < 0.16:
            j = rng.randrange(i + 1)
            email, phone = "", f"012{j:07d}"
        elif kind < 0.2:
            phone = "12345"
        consent = rng.choice(["yes", "no", "", "unsubscribed", "cleaned", "opt-in"])
        sms = rng.choice(["yes", "", "no"])
        text = rng.choice(["", "I agree to texts"])
        lines.append(f"{email},{phone},N{i},MY,{consent},{sms},2024-05-0{1 + i % 9}T10:00:00Z,{text},"
                     f"t{i % 3},\"a{i % 4}, b\"")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _outcome(summary) -> dict:
    def proof(p):
        return {k: v for k, v in p.items() if k != "imported_at"}

    return {
        "line": summary.line(),
        "report": sorted(summary.report),
        "consents": dict(summary.consents),
        "contacts": list(Contact.objects.order_by("email", "phone").values_list(
            "email", "phone", "first_name", "country", "properties")),
        "tags": sorted(Contact.tags.through.objects.values_list("contact__email", "contact__phone", "tag__name"),
                       key=str),
        "consent": sorted(Consent.objects.values_list("contact__email", "contact__phone", "channel", "status"), key=str),
        "events": sorted((e.contact.email or "", str(e.contact.phone or ""), e.channel, e.status, e.accepted, e.note,
                          sorted(proof(e.proof).items(), key=str))
                         for e in ConsentEvent.objects.select_related("contact")),
    }


def _import(path, *, in_process: bool, monkeypatch, settings) -> dict:
    settings.IMPORT_CHUNK_ROWS = 37  # many chunks: the same person in several of them
    settings.IMPORT_PARSE_PROCESS_BYTES = 0 if in_process else -1
    forked = []
    real = pipeline.parse_ahead

    def spy(*args, **kwargs):
        forked.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "parse_ahead", spy)
    result = {}
    try:
        with transaction.atomic():
            summary = import_file(path, kind="contacts", options=ImportOptions(actor="ana"))
            again = import_file(path, kind="contacts", options=ImportOptions(actor="ana"))  # idempotent
            result = _outcome(summary) | {"again": again.line()}
            raise _Undo
    except _Undo:
        pass
    assert bool(forked) == in_process
    return result


@needs_fork
def test_parsing_in_a_child_process_imports_exactly_what_parsing_inline_does(tmp_path, monkeypatch, settings):
    path = tmp_path / "messy.csv"
    _messy_file(path)
    Contact.objects.create(email="p3@kedai-customer.my", first_name="Old")  # an update
    gone = Contact.objects.create(email="p5@kedai-customer.my")
    services.unsubscribe(contact=gone, channel="email", source="one_click")
    services.suppress(channel="email", address="p8@kedai-customer.my", reason=SuppressionReason.COMPLAINT)
    inline = _import(path, in_process=False, monkeypatch=monkeypatch, settings=settings)
    forked = _import(path, in_process=True, monkeypatch=monkeypatch, settings=settings)
    assert inline["line"].startswith("created ") and inline["report"] and inline["events"]
    assert forked == inline


def test_a_brand_new_contacts_suppressed_address_is_still_refused(write_file, settings):
    """New contacts skip the consent look-ups (they have no history), never the suppression list."""
    services.suppress(channel="email", address="complained@kedai-customer.my", reason=SuppressionReason.COMPLAINT)
    path = write_file("new.csv", "email,email_consent\ncomplained@kedai-customer.my,yes\nfine@kedai-customer.my,yes\n")
    call_command("import_contacts", path, actor="ana")
    refused = ConsentEvent.objects.get(contact__email="complained@kedai-customer.my")
    assert not refused.accepted and "suppressed: complaint" in refused.note
    assert not Consent.objects.filter(contact__email="complained@kedai-customer.my").exists()
    assert Consent.objects.get(contact__email="fine@kedai-customer.my").status == "subscribed"


@needs_fork
@pytest.mark.parametrize("in_process", [False, True])
def test_a_file_that_stops_being_utf8_halfway_fails_the_same_way_in_both_modes(tmp_path, settings, in_process):
    settings.IMPORT_CHUNK_ROWS = 10
    settings.IMPORT_PARSE_PROCESS_BYTES = 0 if in_process else -1
    good = "".join(f"u{i}@example.com,N{i}\n" for i in range(3000))  # past the decoder's first blocks
    path = tmp_path / "half.csv"
    path.write_bytes(b"email,first_name\n" + good.encode() + "late@example.com,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8 text near line"):
        call_command("import_contacts", str(path))
    assert 0 < Contact.objects.count() < 3000  # the chunks before the bad bytes went in, as inline


def _nth(items, fail_at, action):
    for i, item in enumerate(items):
        if i == fail_at:
            action()
        yield item


@needs_fork
def test_parse_ahead_streams_results_in_order():
    assert list(pipeline.parse_ahead(lambda x: x * 2, iter(range(50)))) == [x * 2 for x in range(50)]


@needs_fork
def test_an_exception_in_the_child_is_raised_where_it_happened():
    def boom():
        raise ValueError("the file is not UTF-8 text near line 7")

    got = []
    with pytest.raises(ValueError, match="near line 7"):
        for x in pipeline.parse_ahead(lambda x: x, _nth(range(10), 3, boom)):
            got.append(x)
    assert got == [0, 1, 2]


@needs_fork
def test_an_exception_that_cannot_be_pickled_arrives_as_its_text():
    class Local(Exception):  # a local class cannot be pickled
        pass

    def boom():
        raise Local("odd")

    with pytest.raises(pipeline.ParserStopped, match="odd"):
        list(pipeline.parse_ahead(lambda x: x, _nth(range(5), 2, boom)))


@needs_fork
def test_a_child_that_dies_is_reported_not_waited_for():
    with pytest.raises(pipeline.ParserStopped, match="exit code 3"):
        list(pipeline.parse_ahead(lambda x: x, _nth(range(5), 2, lambda: os._exit(3))))


@needs_fork
def test_a_child_that_hangs_is_reported_after_the_stall_limit():
    started = time.monotonic()
    with pytest.raises(pipeline.ParserStopped, match="sent nothing"):
        list(pipeline.parse_ahead(lambda x: x, _nth(range(5), 1, lambda: time.sleep(60)), stall_seconds=0.5))
    assert time.monotonic() - started < 10


@needs_fork
def test_a_consumer_that_stops_early_stops_the_child():
    before = _children()
    stream = pipeline.parse_ahead(lambda x: x, iter(range(10**9)))
    assert next(stream) == 0
    assert len(_children() - before) == 1
    stream.close()  # the child is blocked sending: it is terminated, not left behind
    assert _children() == before  # not even a zombie


def _children() -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


def _in_a_daemonic_worker(queue):
    queue.put(list(pipeline.parse_ahead(lambda x: x + 1, iter(range(5)))))


@needs_fork
def test_it_works_inside_a_daemonic_process_as_django_q2_runs_its_workers():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    worker = ctx.Process(target=_in_a_daemonic_worker, args=(queue,), daemon=True)
    worker.start()
    assert queue.get(timeout=30) == [1, 2, 3, 4, 5]
    worker.join(10)
    assert worker.exitcode == 0


def test_parsed_rows_travel_whole():
    """ContactRow and ConsentStatement pickle as their constructor's arguments: every field, set to a
    value of its own, comes back (a field added later and left out of __reduce__ fails here)."""
    import dataclasses
    import pickle
    from datetime import UTC, datetime

    from segments.ingest.formats import ConsentStatement, ContactRow

    statement = ConsentStatement("sms", "subscribed", datetime(2024, 5, 1, tzinfo=UTC), {"consent_text": "yes"})
    values = {"line": 7, "email": "a@example.com", "phone": "+60123456789", "tags": ["vip"],
              "properties": {"size": "41"}, "customer_ids": [("shop", "42")], "consents": [statement],
              "warnings": ["w"], "lines": [7, 9]}
    row = ContactRow(**{f.name: values.get(f.name, f"{f.name}-value") for f in dataclasses.fields(ContactRow)})
    back = pickle.loads(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301 (our own bytes)
    assert back == row
    assert dataclasses.asdict(back) == dataclasses.asdict(row)
    assert pickle.loads(pickle.dumps(statement)) == statement  # noqa: S301


@pytest.mark.parametrize("enabled", [True, False])
def test_the_garbage_collector_is_paused_per_chunk_and_left_as_it_was(tmp_path, settings, enabled):
    """Chunks are written with the cyclic collector paused (segments.collector.paused); around them,
    and after the import, it is exactly as the caller had it."""
    import gc

    from segments.signals import consents_stated

    settings.IMPORT_CHUNK_ROWS = 100
    path = tmp_path / "contacts.csv"
    _messy_file(path, n=250)
    during = []

    def watch(sender, **kwargs):
        during.append(gc.isenabled())

    consents_stated.connect(watch)
    (gc.enable if enabled else gc.disable)()
    try:
        summary = import_file(path, kind="contacts", options=ImportOptions(actor="test"))
        after = gc.isenabled()
    finally:
        gc.enable()
        consents_stated.disconnect(watch)
    assert summary.created > 0 and len(during) == 3 and not any(during)
    assert after is enabled


@pytest.mark.django_db(transaction=True)
def test_a_contact_in_a_chunk_being_written_cannot_be_erased_until_the_chunk_commits(tmp_path):
    """The look-ups lock the contacts they find (FOR KEY SHARE): an erasure meanwhile waits, instead of
    leaving the chunk's consent rows pointing at nobody and the chunk failing at COMMIT."""
    import psycopg
    from django.db import connection

    from segments.signals import consents_stated

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (on SQLite the chunk's transaction holds the write lock)")
    mei = Contact.objects.create(email="mei@example.com", first_name="Mei")  # found, not updated: no row lock
    path = tmp_path / "contacts.csv"
    path.write_text("email,first_name,email_consent\nmei@example.com,Mei,yes\nbob@example.com,Bob,yes\n")
    db = connection.settings_dict
    outcome = []

    def erase_meanwhile(sender, **kwargs):  # inside the chunk's transaction, after its look-ups
        with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                             password=db["PASSWORD"] or None, dbname=db["NAME"], autocommit=True) as other:
            other.execute("SET lock_timeout = '300ms'")
            try:
                other.execute("DELETE FROM segments_contact WHERE id = %s", [mei.pk])
                outcome.append("erased")
            except psycopg.errors.LockNotAvailable:
                outcome.append("waited")

    consents_stated.connect(erase_meanwhile)
    try:
        summary = import_file(path, kind="contacts", options=ImportOptions(actor="test"))
    finally:
        consents_stated.disconnect(erase_meanwhile)
    assert outcome == ["waited"]
    assert (summary.created, summary.updated, summary.skipped, summary.errors) == (1, 0, 1, 0)
    assert ConsentEvent.objects.filter(contact=mei).exists()
