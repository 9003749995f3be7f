"""Contact and order imports: streamed, chunked, idempotent, with a row-error report.

One chunk (IMPORT_CHUNK_ROWS rows) costs two lookups, one bulk INSERT, one bulk UPDATE and the
tag/identifier inserts, in one transaction. Rows of the same person merge (normalised email,
else E.164 phone); a re-import changes nothing (unchanged rows count as skipped). Consent is
stated through segments.signals.consents_stated (one signal per chunk), never assumed.
Files of IMPORT_PARSE_PROCESS_BYTES or more are parsed in a child process one chunk ahead of
the writes (segments/ingest/pipeline.py); the outcome is the same, row for row.
"""

import contextlib
import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from segments import collector
from segments.ingest import formats, pipeline, sql
from segments.ingest.formats import ConsentStatement, ContactRow, RowError, UnknownLayout
from segments.ingest.services import state_consents
from segments.membership import segment_refresh_for_contacts
from segments.models import Contact, ContactIdentifier, Tag
from segments.signals import StatedConsent, contacts_created

CONTACT_FIELDS = ("first_name", "last_name", "country", "locale", "timezone")


@dataclass
class ImportOptions:
    file_name: str = ""
    sha256: str = ""
    actor: str = ""
    dry_run: bool = False
    trigger_flows: bool = False
    consent_source: str = ""
    consent_basis: str = ""
    consent_channels: tuple[str, ...] = ("email",)
    chunk_rows: int = 0
    collect_outcomes: bool = False  # the admin preview lists every row's outcome

    def __post_init__(self):
        if bool(self.consent_source.strip()) != bool(self.consent_basis.strip()):
            raise ValueError("State both the consent source and the consent basis, or neither.")
        self.chunk_rows = self.chunk_rows or settings.IMPORT_CHUNK_ROWS


@dataclass
class ImportSummary:
    layout: str = ""
    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0
    report: list[tuple[int, str, str]] = field(default_factory=list)  # (line, "error"|"warning", reason)
    consents: Counter = field(default_factory=Counter)  # (channel, state) → statements
    contact_ids: set[int] = field(default_factory=set)
    event_ids: list[int] = field(default_factory=list)
    dry_run: bool = False
    outcomes: list[tuple[int, str, str, str]] = field(default_factory=list)  # line, new|update|skip|error, who, note

    def line(self) -> str:
        prefix = "Dry run (nothing written): would have " if self.dry_run else ""
        return (f"{prefix}created {self.created}, updated {self.updated}, skipped {self.skipped}, "
                f"errors {self.errors} ({self.rows} rows, layout {self.layout})")

    def error(self, line: int, reason: str) -> None:
        self.errors += 1
        self.report.append((line, "error", reason))
        self.outcomes.append((line, "error", "", reason))

    def write_report(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "level", "reason"])
            writer.writerows(sorted(self.report))
        return path


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- contacts -------------------------------------------------------------------------------

class ContactImporter:
    """Imports contact rows of any recognised layout; see the module docstring.

    People are handled as plain dicts (READ_COLUMNS of segments.ingest.sql) and written with
    executemany: see that module for why the ORM is bypassed on this path.
    """

    def __init__(self, options: ImportOptions, progress: Callable[[int, "ImportSummary"], None] | None = None):
        self.opts = options
        self.progress = progress
        self.summary = ImportSummary(dry_run=options.dry_run)
        self.seen: dict[str, dict] = {}  # dry run: identity → the record it would have created
        self.now = timezone.now()
        self.now_iso = self.now.isoformat()
        # Parse the chunks in a child process while this one writes (see pipeline); import_file
        # turns it on for files large enough to repay the fork.
        self.parse_in_process = False

    def run(self, header: list[str], rows: Iterator[tuple[int, dict]]) -> ImportSummary:
        layout = formats.detect_contact_layout(header)
        names = {h.lower() for h in header}
        self.layout = layout
        self.summary.layout = layout.name
        self.stated_basis = not layout.has_consent_columns(names) and bool(self.opts.consent_source)
        if layout.has_consent_columns(names) and self.opts.consent_source:
            raise UnknownLayout("This file has its own consent columns; a consent source and basis can only be "
                                "stated for files without them.")
        chunks = _chunks(rows, self.opts.chunk_rows)
        with contextlib.closing(pipeline.parse_ahead(self._parse, chunks) if self.parse_in_process
                                else (self._parse(chunk) for chunk in chunks)) as parsed_chunks:
            for n, parsed, problems in parsed_chunks:
                self._take(n, parsed, problems)
        if self.summary.contact_ids and not self.opts.dry_run:
            # Bulk writes send no signals: move segment memberships for the people touched.
            segment_refresh_for_contacts(contact_ids=self.summary.contact_ids, changed={"contact", "tags"})
        return self.summary

    def _take(self, n: int, parsed: list[ContactRow], problems: list[tuple[int, str, str]]) -> None:
        """One parsed chunk: its problems into the report, in file order, then its rows written."""
        for line, level, reason in problems:
            if level == "error":
                self.summary.error(line, reason)
            else:
                self.summary.report.append((line, level, reason))
        self.summary.rows += n
        with collector.paused():  # see segments.collector: the chunk's live containers, walked again and again
            self._write(parsed)
        if self.progress:
            self.progress(self.summary.rows, self.summary)

    def _parse(self, chunk: list[tuple[int, dict]]) -> tuple[int, list[ContactRow], list[tuple[int, str, str]]]:
        """(rows read, the usable rows, (line, "error"|"warning", reason) problems); touches nothing shared."""
        rows, problems = [], []
        extract, layout = self.layout.extract, self.layout
        for line, raw in chunk:
            try:
                row = extract(raw, layout)
            except RowError as exc:
                problems.append((line, "error", str(exc)))
                continue
            row.line = line
            problems += [(line, "warning", w) for w in row.warnings]
            rows.append(row)
        return len(chunk), rows, problems

    # 1. merge the chunk's rows of the same person; 2. look the people up; 3. diff; 4. write.
    def _write(self, rows: list[ContactRow]) -> None:
        people = self._merge(rows)
        # One transaction from the look-ups to the last write: the chunk is diffed against what it then
        # writes over, and the look-ups get the import's settings too (sql.import_transaction).
        with transaction.atomic():
            sql.import_transaction()
            done, new, changed = self._diff(people)
            if self.opts.dry_run:
                for _rec, person in done:
                    for s in self._consents(person):
                        self.summary.consents[(s.channel, s.state)] += 1
                return
            sql.insert(new, now=self.now, source="import")
            sql.update(changed, now=self.now)
            self._assign_ids(new)
            contacts_created.send(sender=Contact, contacts=[(r["id"], r["email"]) for r in new])
            self._write_tags(done)
            self._write_identifiers(done)
            statements = []
            created = {rec["id"] for rec in new}
            for rec, person in done:
                self.summary.contact_ids.add(rec["id"])
                # The contact's addresses as just written: the compliance app need not read them back.
                addresses = (rec["email"] or None, rec["phone"] or None)
                statements += [self._statement(rec["id"], person, s, rec["id"] in created, addresses)
                               for s in self._consents(person)]
            # One signal for the chunk: the compliance app records it in a handful of queries.
            state_consents(statements, trigger_flows=self.opts.trigger_flows)

    def _diff(self, people: list[ContactRow]) -> tuple[list[tuple[dict, ContactRow]], list[dict], list[dict]]:
        """(every (record, person) to write, the new records, the changed stored ones); counts each outcome."""
        existing = self._lookup(people)
        new, changed, done = [], [], []
        for person in people:
            rec = self._match(person, existing)
            if rec is None:
                rec = self._new_record(person, existing)
                if rec is None:
                    continue
                new.append(rec)
                kind = "new"
            else:
                fields = self._apply(person, rec)
                if fields and rec["id"] > 0:
                    changed.append(rec)
                kind = "update" if fields or self._adds_tags_or_ids(person, rec) else "skip"
            setattr(self.summary, {"new": "created", "update": "updated", "skip": "skipped"}[kind],
                    getattr(self.summary, {"new": "created", "update": "updated", "skip": "skipped"}[kind]) + 1)
            if self.opts.collect_outcomes:
                self._outcome(person, kind)
            done.append((rec, person))
        return done, new, changed

    def _merge(self, rows: list[ContactRow]) -> list[ContactRow]:
        by_email: dict[str, ContactRow] = {}
        by_phone: dict[str, ContactRow] = {}
        people: list[ContactRow] = []
        for row in rows:
            target = by_email.get(row.email) if row.email else None
            if target is None and row.phone and row.phone in by_phone:
                target = by_phone[row.phone]
                if row.email and target.email and row.email != target.email:
                    target = None  # two people sharing a phone: the second keeps its email only
                    row.warnings.append(f"phone {row.phone} already belongs to {by_phone[row.phone].email}")
                    self.summary.report.append((row.line, "warning", row.warnings[-1]))
                    row.phone = None
            if target is None:
                people.append(row)
                target = row
                target.lines = [row.line]
            else:
                _fold(target, row)
                target.lines.append(row.line)
                self.summary.skipped += 1  # counted once, as the person's first row
                self.summary.report.append((row.line, "warning", f"same person as line {target.line}: merged"))
            if target.email:
                by_email[target.email] = target
            if target.phone:
                by_phone.setdefault(target.phone, target)
        return people

    def _outcome(self, person: ContactRow, kind: str) -> None:
        who = " / ".join(x for x in (person.email, person.phone, person.first_name, person.last_name) if x)
        consent = ", ".join(f"{c.channel}: {c.state}" for c in self._consents(person))
        self.summary.outcomes.append((person.line, kind, who, consent))

    def _lookup(self, people: list[ContactRow]) -> dict:
        found = {}
        for rec in sql.fetch("email", [p.email for p in people if p.email]):
            found[("email", rec["email"])] = rec
        for rec in sql.fetch("phone", [p.phone for p in people if p.phone]):
            found[("phone", rec["phone"])] = rec
        ids = list({rec["id"] for rec in found.values()})
        self.tags_of: dict[int, set[str]] = {}
        self.ids_of: dict[int, set[tuple[str, str]]] = {}
        if ids and any(p.tags for p in people):
            for cid, name in Contact.tags.through.objects.filter(contact_id__in=ids).values_list(
                    "contact_id", "tag__name"):
                self.tags_of.setdefault(cid, set()).add(name)
        if ids and any(p.customer_ids for p in people):
            for cid, source, value in ContactIdentifier.objects.filter(contact_id__in=ids, kind="shop_customer") \
                    .values_list("contact_id", "source", "value"):
                self.ids_of.setdefault(cid, set()).add((source, value))
        return found

    def _match(self, person: ContactRow, existing: dict) -> dict | None:
        rec = existing.get(("email", person.email)) if person.email else None
        if rec is None and person.phone:
            rec = existing.get(("phone", person.phone))
            if rec is not None and person.email and rec["email"] and rec["email"] != person.email:
                self.summary.report.append((person.line, "warning", f"phone {person.phone} belongs to another "
                                            "contact; imported as a new contact without it"))
                person.phone = None
                rec = None
        if rec is None and self.opts.dry_run:
            rec = self.seen.get(person.email or "") or self.seen.get(person.phone or "")
        return rec

    def _new_record(self, person: ContactRow, existing: dict) -> dict | None:
        if person.phone and ("phone", person.phone) in existing:
            # The email is new but the phone is someone else's: keep the email only.
            self.summary.report.append((person.line, "warning", f"phone {person.phone} belongs to another contact"))
            person.phone = None
            if not person.email:
                self.summary.error(person.line, "phone belongs to another contact and there is no email")
                return None
        rec = {"id": None, "email": person.email, "phone": person.phone, "properties": dict(person.properties),
               **{f: getattr(person, f) for f in CONTACT_FIELDS}}
        if self.opts.dry_run:
            rec["id"] = -(len(self.seen) + 1)
            for key in (person.email, person.phone):
                if key:
                    self.seen[key] = rec
        return rec

    def _apply(self, person: ContactRow, rec: dict) -> set[str]:
        """Fill in what the row says; an empty cell never blanks out what we know."""
        changed = set()
        for f in CONTACT_FIELDS:
            value = getattr(person, f)
            if value and rec[f] != value:
                rec[f] = value
                changed.add(f)
        for f in ("email", "phone"):
            value = getattr(person, f)
            if value and not rec[f]:
                rec[f] = value
                changed.add(f)
        if person.properties:
            merged = {**(rec["properties"] or {}), **person.properties}
            if merged != rec["properties"]:
                rec["properties"] = merged
                changed.add("properties")
        return changed

    def _assign_ids(self, new: list[dict]) -> None:
        """Ids of the rows just inserted, found again by their unique email, else phone (where the
        insert could not tell them: sql.insert sets them on PostgreSQL)."""
        new = [rec for rec in new if rec["id"] is None]
        if not new:
            return
        by_email = sql.ids_by("email", [n["email"] for n in new if n["email"]])
        by_phone = sql.ids_by("phone", [n["phone"] for n in new if not n["email"]])
        for rec in new:
            rec["id"] = by_email[rec["email"]] if rec["email"] else by_phone[rec["phone"]]

    def _adds_tags_or_ids(self, person: ContactRow, rec: dict) -> bool:
        if rec["id"] is None or rec["id"] < 0:
            return False
        return bool(set(person.tags) - self.tags_of.get(rec["id"], set())) or \
            bool(set(person.customer_ids) - self.ids_of.get(rec["id"], set()))

    def _write_tags(self, done) -> None:
        names = {t for _r, person in done for t in person.tags}
        if not names:
            return
        Tag.objects.bulk_create([Tag(name=n) for n in names], ignore_conflicts=True)
        tag_ids = dict(Tag.objects.filter(name__in=names).values_list("name", "id"))
        through = Contact.tags.through
        links = {(rec["id"], tag_ids[t]) for rec, person in done for t in person.tags}
        through.objects.bulk_create([through(contact_id=c, tag_id=t) for c, t in links], ignore_conflicts=True)

    def _write_identifiers(self, done) -> None:
        rows = [ContactIdentifier(contact_id=rec["id"], kind="shop_customer", source=s, value=v[:128])
                for rec, person in done for s, v in person.customer_ids]
        if rows:
            ContactIdentifier.objects.bulk_create(rows, ignore_conflicts=True)

    def _consents(self, person: ContactRow) -> list[ConsentStatement]:
        if person.consents:
            latest = {}
            for s in person.consents:  # the last row of the person wins per channel
                latest[s.channel] = s
            return list(latest.values())
        if not self.stated_basis:
            return []
        out = []
        if "email" in self.opts.consent_channels and person.email:
            out.append(ConsentStatement("email", formats.SUBSCRIBED))
        if "sms" in self.opts.consent_channels and person.phone:
            out.append(ConsentStatement("sms", formats.SUBSCRIBED))
        return out

    def _statement(self, contact_id: int, person: ContactRow, s: ConsentStatement,
                   new_contact: bool = False, addresses: tuple[str | None, str | None] | None = None) -> StatedConsent:
        proof = {
            "key": f"import:{self.opts.sha256[:16]}:{person.line}:{s.channel}",
            "file": self.opts.file_name, "sha256": self.opts.sha256, "layout": self.layout.name,
            "line": person.line, "lines": person.lines, "actor": self.opts.actor, "imported_at": self.now_iso,
            **s.proof,
        }
        if self.stated_basis and not person.consents:
            proof.update({"consent_source": self.opts.consent_source, "consent_basis": self.opts.consent_basis})
        self.summary.consents[(s.channel, s.state)] += 1
        return StatedConsent(contact_id=contact_id, channel=s.channel, state=s.state, source="import", proof=proof,
                             occurred_at=s.occurred_at, new_contact=new_contact, addresses=addresses)


def _fold(target: ContactRow, row: ContactRow) -> None:
    """The same person twice in a file: later non-empty values win, lists and properties add up."""
    for f in ("email", "phone", *CONTACT_FIELDS):
        value = getattr(row, f)
        if value and (f not in ("email", "phone") or not getattr(target, f)):
            setattr(target, f, value)
    target.tags = list(dict.fromkeys(target.tags + row.tags))
    target.properties.update(row.properties)
    target.customer_ids = list(dict.fromkeys(target.customer_ids + row.customer_ids))
    target.consents.extend(row.consents)


def import_file(path, *, kind: str, options: ImportOptions,
                progress: Callable[[int, ImportSummary], None] | None = None) -> ImportSummary:
    """Import a CSV file from disk (the commands and the background task call this)."""
    from segments.ingest.reader import open_csv

    options.sha256 = options.sha256 or file_sha256(path)
    options.file_name = options.file_name or Path(path).name
    with open(path, "rb") as f, collector.frozen():
        header, rows = open_csv(f)
        from segments.ingest.order_importer import OrderImporter  # it imports this module's shared parts

        importer = (ContactImporter if kind == "contacts" else OrderImporter)(options, progress)
        if kind == "contacts":
            importer.parse_in_process = parse_in_process(path)
        return importer.run(header, rows)


def parse_in_process(path) -> bool:
    """Whether an import of this file parses in a child process (pipeline.parse_ahead).

    Not for small files (forking costs ~10 ms, the overlap saves ~40% of the time), nor where no
    fork exists (not on Windows).
    """
    limit = settings.IMPORT_PARSE_PROCESS_BYTES
    return limit >= 0 and Path(path).stat().st_size >= limit and pipeline.available()


def report_path_for(path) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".errors.csv")

