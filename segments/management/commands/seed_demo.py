import time

from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from segments.datagen import SIZES, generate
from segments.models import Contact


class Command(BaseCommand):
    help = "Build the demo shop: ~2,000 contacts, ~150 products, ~6,000 orders over 18 months, ~50,000 events."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--seed", type=int, default=42, help="Same seed, same shop (default 42).")
        parser.add_argument("--size", choices=sorted(SIZES), default="demo")
        parser.add_argument("--currency", default="MYR", help="The shop's currency (MYR, JPY, USD...).")
        parser.add_argument("--flush", action="store_true", help="Delete the existing shop data first.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when contacts already exist.")

    def handle(self, *args, **opts) -> str:
        from segments.models import Category, Event, Order, Product, Tag

        if Contact.objects.exists():
            if opts["if_empty"]:
                return "The shop already has data; left as it is."
            if not opts["flush"]:
                raise CommandError("The shop already has contacts. Use --flush to replace them (or --if-empty).")
            with transaction.atomic():
                for model in (Event, Order, Contact, Product, Category, Tag):
                    # Children first (Category.parent is PROTECT).
                    if model is Category:
                        Category.objects.filter(parent__isnull=False).delete()
                    model.objects.all().delete()
        started = time.monotonic()
        counts = generate(size=opts["size"], seed=opts["seed"], currency=opts["currency"].upper())
        after = self._install_extras()
        took = time.monotonic() - started
        summary = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in counts.items())
        return f"Demo shop ready in {took:.1f} s: {summary}{after}"

    def _install_extras(self) -> str:
        """Shipped segments evaluated, CLV fitted and scores computed, so the demo shows them at once."""
        from segments.tasks import clv_refit, scores_refresh, segments_refresh_all

        call_command("install_segments", verbosity=0)
        clv_refit()
        scores_refresh()
        segments_refresh_all()
        done = ["segments", "CLV", "scores"]
        if "install_flows" in get_commands():  # the automation app's flow library, when present
            call_command("install_flows", verbosity=0)
            done.append("flows")
        return f" (+ {', '.join(done)})"
