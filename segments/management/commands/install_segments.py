from django.core.management.base import BaseCommand

from segments.shipped import segments_install


class Command(BaseCommand):
    help = ("Install the shipped segments (behavioural, value, lifecycle stages, value x activity groups, "
            "category buyers). Idempotent; --reset restores the shipped definitions.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--reset", action="store_true", help="Overwrite edits to shipped segments.")

    def handle(self, *args, reset: bool = False, **options) -> str:
        created, updated = segments_install(reset=reset)
        return f"Shipped segments: {created} created, {updated} reset."
