from django.core.management.base import BaseCommand, CommandError

from compliance import gate
from compliance.addresses import normalize_phone
from segments.models import Contact


class Command(BaseCommand):
    help = "Say whether a message may go to a person now, and why not: can_send <email or phone> <channel>."

    def add_arguments(self, parser) -> None:
        parser.add_argument("who", help="email address or phone number")
        parser.add_argument("channel", choices=gate.CHANNELS)
        parser.add_argument("--purpose", choices=["marketing", "transactional"], default="marketing")
        parser.add_argument("--topic", default=None)

    def handle(self, *args, who: str, channel: str, purpose: str, topic: str | None, **options) -> str:
        if "@" in who:
            contact = Contact.objects.by_identity(email=who).first()
        else:
            contact = Contact.objects.by_identity(phone=normalize_phone(who)).first()
        if contact is None:
            raise CommandError(f"No contact with {who!r}.")
        d = gate.can_send(contact=contact, channel=channel, purpose=purpose, topic=topic)
        answer = "yes" if d.allowed else ("later" if d.defer_until else "no")
        line = f"{answer}: {d.reason}"
        if d.defer_until:
            line += f" (until {d.defer_until.isoformat()})"
        return line
