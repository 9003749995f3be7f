"""What import_contacts and import_orders share: flags, the summary line, the error report."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.ingest.formats import UnknownLayout
from segments.ingest.importer import ImportOptions, import_file, report_path_for


class ImportCommand(BaseCommand):
    kind = "contacts"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="CSV file (UTF-8, with or without BOM)")
        parser.add_argument("--dry-run", action="store_true", help="Report what would happen; write nothing.")
        parser.add_argument("--trigger-flows", action="store_true", default=False,
                            help="Let the imported data start flows (off by default: history must not send "
                                 "welcome emails).")
        parser.add_argument("--no-trigger-flows", dest="trigger_flows", action="store_false")
        parser.add_argument("--consent-source", default="",
                            help="Files without consent columns only: where these people agreed to marketing.")
        parser.add_argument("--consent-basis", default="",
                            help="...and on what basis (wording, checkbox). Required with --consent-source.")
        parser.add_argument("--consent-channel", action="append", choices=["email", "sms"],
                            help="Channels the stated consent covers (default: email).")
        parser.add_argument("--actor", default="", help="Who runs the import (recorded in the consent proof).")
        parser.add_argument("--report", default="", help="Where to write the row-error report "
                                                         "(default: next to the file, NAME.errors.csv).")

    def handle(self, *args, **opts) -> str:
        path = Path(opts["path"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            options = ImportOptions(dry_run=opts["dry_run"], trigger_flows=opts["trigger_flows"],
                                    consent_source=opts["consent_source"], consent_basis=opts["consent_basis"],
                                    consent_channels=tuple(opts["consent_channel"] or ("email",)),
                                    actor=opts["actor"] or "command line")
            summary = import_file(path, kind=self.kind, options=options)
        except (UnknownLayout, ValueError) as exc:
            raise CommandError(str(exc)) from None
        report = Path(opts["report"]) if opts["report"] else report_path_for(path)
        summary.write_report(report)
        if summary.report:
            self.stderr.write(f"Row report: {report}")
        return summary.line()
