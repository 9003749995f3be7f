"""Temporary runner for benchmark B2 until the lead's `bench` command wires bench/b2_events.py in."""

import json

from django.core.management.base import BaseCommand

from bench import b2_events


class Command(BaseCommand):
    help = "Run benchmark B2 (PERFORMANCE.md section 5) and print its table; --json for JSON lines."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", choices=["small", "full"], default="small")
        parser.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
        parser.add_argument("--json", action="store_true", help="Also print one JSON line per result row.")

    def handle(self, *args, **opts) -> None:
        rows = b2_events.run(size=opts["size"], db=opts["db"])
        if opts["json"]:
            for r in rows:
                self.stdout.write(json.dumps(r))
