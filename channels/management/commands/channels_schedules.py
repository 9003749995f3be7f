from django.core.management.base import BaseCommand
from django_q.models import Schedule


class Command(BaseCommand):
    help = "Create or update the channels app's recurring tasks (deferred and interrupted messages)."

    def handle(self, *args, **opts) -> str:
        Schedule.objects.update_or_create(
            name="channels: send due messages",
            defaults={"func": "channels.tasks.send_due", "schedule_type": Schedule.MINUTES, "minutes": 1,
                      "repeats": -1})
        return "channels schedules ready"
