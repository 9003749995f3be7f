from django.core.management.base import BaseCommand, CommandError

from channels.models import Template
from channels.preview import send_test
from segments.models import Contact


class Command(BaseCommand):
    help = "Send one test of a template to an email address or phone, rendered with a contact's data."

    def add_arguments(self, parser) -> None:
        parser.add_argument("template", help="template name (slug)")
        parser.add_argument("to", help="email address or E.164 phone number to send the test to")
        parser.add_argument("--contact", help="email of the contact whose data fills the template")

    def handle(self, *args, **opts) -> str:
        template = Template.objects.filter(name=opts["template"]).first()
        if template is None:
            raise CommandError(f"no template named {opts['template']!r}")
        contact = None
        if opts["contact"]:
            contact = Contact.objects.by_identity(email=opts["contact"]).first()
            if contact is None:
                raise CommandError(f"no contact with email {opts['contact']!r}")
        ok, note = send_test(template, opts["to"], contact=contact, requested_by="send_test")
        if not ok:
            raise CommandError(note)
        return note
