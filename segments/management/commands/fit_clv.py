from datetime import date

from django.core.management.base import BaseCommand, CommandError

from segments.scoring import NotEnoughData, clv_fit, end_of_day


class Command(BaseCommand):
    help = ("Fit the BG/NBD + Gamma-Gamma model on revenue orders up to --as-of (default now), print the "
            "parameters and store each customer's expected purchases, probability alive, churn risk and CLV.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--as-of", type=date.fromisoformat, default=None,
                            help="YYYY-MM-DD: use orders placed up to the end of this day (shop time zone).")

    def handle(self, *args, as_of=None, **options) -> str:
        try:
            result = clv_fit(as_of=end_of_day(as_of) if as_of else None)
        except NotEnoughData as e:
            raise CommandError(f"Not enough order history to fit: {e}") from None
        f = result.fit
        self.stdout.write(f"BG/NBD: r={f.r:.3f} alpha={f.alpha:.3f} a={f.a:.3f} b={f.b:.3f} "
                          f"(log-likelihood {f.log_likelihood:.1f}; {f.customers} customers, "
                          f"{f.repeat_customers} repeat)")
        self.stdout.write(f"Gamma-Gamma: p={f.p:.2f} q={f.q:.2f} v={f.v:.2f}")
        return f"Stored predicted figures for {result.scored} customers (as of {f.as_of:%Y-%m-%d})."
