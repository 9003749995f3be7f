"""Temporary runner for benchmark B1 until the lead's `bench` command wires bench/b1_import.py in."""

import json

from django.core.management.base import BaseCommand

from bench import b1_import


class Command(BaseCommand):
    help = "Run benchmark B1 (PERFORMANCE.md section 5) and print its table; --json for JSON lines."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", choices=["small", "full"], default="small")
        parser.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
        parser.add_argument("--json", action="store_true", help="Also print one JSON line per result row.")

    def handle(self, *args, **opts) -> None:
        rows = b1_import.run(size=opts["size"], db=opts["db"])
        if opts["json"]:
            for r in rows:
                self.stdout.write(json.dumps(r))
