from segments.ingest.command import ImportCommand


class Command(ImportCommand):
    help = ("Import contacts from a CSV: Shopify customer export, Mailchimp audience export (subscribed, "
            "unsubscribed or cleaned), Klaviyo profile export, or our template (segments/ingest/README.md).")
    kind = "contacts"
