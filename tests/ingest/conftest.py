"""Fixtures for the ingestion tests: a consent-signal recorder, an events-signal recorder, files."""

import pytest

from segments.signals import consent_stated, events_ingested


class Recorder:
    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, sender, **kwargs):
        kwargs.pop("signal", None)
        self.calls.append(kwargs)

    def for_email(self, email: str) -> list[dict]:
        return [c for c in self.calls if c["contact"].email == email]


@pytest.fixture
def consents():
    rec = Recorder()
    consent_stated.connect(rec, weak=False)
    yield rec
    consent_stated.disconnect(rec)


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
