import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from bench import b3_segments


class Command(BaseCommand):
    help = ("Benchmark B3 (segment rebuild, full and incremental) in a throwaway database. Temporary: "
            "the lead wires bench/b3_segments.run into `manage.py bench b3`.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", choices=["small", "full"], default="small")
        parser.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
        parser.add_argument("--json", help="Also write the result rows as JSON lines to this file.")

    def handle(self, *args, size: str, db: str, json: str | None = None, **options) -> str:
        try:
            rows = b3_segments.run(size=size, db=db)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if json:
            with open(json, "a") as fh:
                fh.writelines(_dumps(r) + "\n" for r in rows)
        failed = [r["variant"] for r in rows if not r["ok"]]
        return f"B3 {size}/{db}: {len(rows) - len(failed)} of {len(rows)} rows ok" + (
            f"; not ok: {failed}" if failed else "")


def _dumps(row: dict) -> str:
    return jsonlib.dumps(row)
