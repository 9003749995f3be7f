from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

# Each app that runs recurring work provides a `<app>_schedules` command that creates or
# updates its django-q2 Schedule rows idempotently; this one runs them all, lowest app first.
SCHEDULE_COMMANDS = ["segments_schedules", "compliance_schedules", "channels_schedules", "automation_schedules"]


class Command(BaseCommand):
    help = "Create or update every recurring django-q2 schedule (segment refresh, sunset sweep, ...)."

    def handle(self, *args, **opts) -> str:
        available = get_commands()
        ran = [name for name in SCHEDULE_COMMANDS if name in available]
        for name in ran:
            call_command(name, verbosity=0)
        return f"Schedules set up ({', '.join(ran) or 'none defined yet'})."
