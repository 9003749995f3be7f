"""Scheduled jobs (django-q2). Thin: each calls a hygiene function. `manage.py compliance_schedules`
creates their Schedule rows."""

from compliance import hygiene

# (function path, minutes between runs, name shown in the django-q2 admin)
SCHEDULES = [
    ("compliance.tasks.sunset_sweep", 24 * 60, "compliance: sunset sweep"),
    ("compliance.tasks.reputation_check", 60, "compliance: reputation check"),
]


def sunset_sweep() -> dict:
    return hygiene.sunset_sweep()


def reputation_check() -> str:
    pause = hygiene.reputation_check()
    return f"paused: {pause.reason}" if pause else "ok"


def schedules_setup() -> int:
    """Create or update the Schedule rows (idempotent: keyed by name). Returns how many were created."""
    from django_q.models import Schedule

    created = 0
    for func, minutes, name in SCHEDULES:
        _, was_created = Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1})
        created += was_created
    return created
