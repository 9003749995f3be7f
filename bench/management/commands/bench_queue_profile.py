import json

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "(internal, used by `bench b6`) measure django-q2 under this process's settings."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--noop", type=int, required=True)
        parser.add_argument("--batch", type=int, required=True)

    def handle(self, *args, **opts) -> None:
        from bench.b6_queue import measure_profile

        self.stdout.write(json.dumps(measure_profile(opts["noop"], opts["batch"])))
