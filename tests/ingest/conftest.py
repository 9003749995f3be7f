"""Fixtures for the ingestion tests: a consent-signal recorder, an events-signal recorder, files."""

import pytest

from segments.models import Contact
from segments.signals import consent_stated, consents_stated, events_ingested


class Recorder:
    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, sender, **kwargs):
        kwargs.pop("signal", None)
        self.calls.append(kwargs)

    def batch(self, sender, *, statements, **kwargs):
        """consents_stated: recorded as if each statement had been sent with consent_stated."""
        kwargs.pop("signal", None)
        for s in statements:
            self.calls.append({"contact": Contact.objects.get(pk=s.contact_id), "channel": s.channel,
                               "state": s.state, "source": s.source, "proof": s.proof,
                               "occurred_at": s.occurred_at, **kwargs})

    def for_email(self, email: str) -> list[dict]:
        return [c for c in self.calls if c["contact"].email == email]


@pytest.fixture
def consents():
    rec = Recorder()
    consent_stated.connect(rec, weak=False)
    consents_stated.connect(rec.batch, weak=False)
    yield rec
    consent_stated.disconnect(rec)
    consents_stated.disconnect(rec.batch)


@pytest.fixture
def ingested():
    rec = Recorder()
    events_ingested.connect(rec, weak=False)
    yield rec
    events_ingested.disconnect(rec)


@pytest.fixture
def write_file(tmp_path):
    def write(name: str, text: str, *, bom: bool = False, crlf: bool = False) -> str:
        if crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        data = text.encode("utf-8")
        if bom:
            data = b"\xef\xbb\xbf" + data
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return write
