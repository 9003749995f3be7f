from segments.ingest.command import ImportCommand


class Command(ImportCommand):
    help = ("Import order history from Shopify's orders export (one row per line item). Customers not yet "
            "known become contacts without marketing consent; their figures are brought up to date.")
    kind = "orders"
