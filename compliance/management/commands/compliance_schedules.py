from django.core.management.base import BaseCommand

from compliance.tasks import SCHEDULES, schedules_setup


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules of the compliance app (sunset sweep, reputation check)."

    def handle(self, *args, **options) -> str:
        created = schedules_setup()
        return f"{len(SCHEDULES)} compliance schedules in place ({created} new)."
