import importlib
import json
import subprocess
import sys

from django.core.management.base import BaseCommand, CommandError

from bench.framework import BENCHMARKS, ROOT, bench_env, database_url, fresh_database, report


class Command(BaseCommand):
    help = ("Run a benchmark (B1-B8 of shared/PERFORMANCE.md) against its reference in the same run: "
            "bench <name> [--size small|full] [--db sqlite|pg]. Results go to bench/results.jsonl.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", choices=sorted(BENCHMARKS))
        parser.add_argument("--size", choices=["small", "full"], default="small")
        parser.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
        parser.add_argument("--inner", action="store_true", help="(internal) run in this process's database")

    def handle(self, *args, **opts) -> None:
        name, size, db = opts["name"], opts["size"], opts["db"]
        module = importlib.import_module(BENCHMARKS[name])
        if opts["inner"]:
            rows = module.run(size=size, db=db)
            self.stdout.write("ROWS " + json.dumps(rows, default=str))
            return
        # A fresh database of the chosen kind, then the benchmark in a child process using it.
        url = database_url(db, name)
        fresh_database(url)
        proc = subprocess.run([sys.executable, "manage.py", "bench", name, "--size", size, "--db", db, "--inner"],
                              cwd=ROOT, env=bench_env(url), capture_output=True, text=True)
        rows = []
        for line in proc.stdout.splitlines():
            if line.startswith("ROWS "):
                rows = json.loads(line[5:])
            else:
                self.stdout.write(line)
        if proc.returncode != 0 or not rows:
            self.stderr.write(proc.stderr[-5000:])
            raise CommandError(f"benchmark {name} failed (exit {proc.returncode})")
        self.stdout.write(report(rows))
        if not all(r.get("ok", True) for r in rows):
            raise CommandError("a correctness check failed: see the ok column")
