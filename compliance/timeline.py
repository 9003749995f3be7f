"""Consent changes on the contact page's timeline (segments.timeline)."""

from django.urls import reverse
from django.utils.translation import gettext as _

from segments import timeline


def _consent_entries(contact, limit: int) -> list[timeline.Entry]:
    from compliance.models import ConsentEvent

    rows = ConsentEvent.objects.filter(contact=contact).order_by("-occurred_at", "-id")[:limit]
    return [
        timeline.Entry(
            at=e.occurred_at, kind="consent",
            title=_("%(channel)s: %(before)s → %(after)s") % {"channel": e.get_channel_display(),
                                                                "before": e.get_previous_status_display(),
                                                                "after": e.get_status_display()}
            if e.accepted else _("%(channel)s: statement not applied") % {"channel": e.get_channel_display()},
            detail=" · ".join(p for p in (e.get_source_display(), e.note) if p),
            url=reverse("admin:compliance_consentevent_change", args=[e.pk]))
        for e in rows
    ]


def connect() -> None:
    timeline.register(_consent_entries)
