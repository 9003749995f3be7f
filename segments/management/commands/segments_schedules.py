from django.core.management.base import BaseCommand
from django_q.models import Schedule

# name -> (task, schedule type, minutes). Segment windows ("in the last 7 days") move with the clock, so a
# full rebuild runs every 15 minutes; events, orders and contact edits update membership incrementally.
SCHEDULES = {
    "segments: full membership refresh": ("segments.tasks.segments_refresh_all", Schedule.MINUTES, 15),
    "segments: RFM scores and send hours": ("segments.tasks.scores_refresh", Schedule.HOURLY, None),
    "segments: refit CLV model": ("segments.tasks.clv_refit", Schedule.DAILY, None),
}


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules of the segments app (idempotent)."

    def handle(self, *args, **options) -> str:
        created = 0
        for name, (func, kind, minutes) in SCHEDULES.items():
            _obj, was_created = Schedule.objects.update_or_create(
                name=name, defaults={"func": func, "schedule_type": kind, "minutes": minutes, "repeats": -1})
            created += was_created
        return f"Segment schedules: {created} created, {len(SCHEDULES) - created} updated."
