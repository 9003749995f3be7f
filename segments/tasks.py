"""django-q2 tasks of the segments app: thin wrappers around services (scheduled by segments_schedules)."""

from segments.membership import segment_refresh_all
from segments.scoring import NotEnoughData, clv_fit, rfm_refresh, send_hours_refresh


def segments_refresh_all() -> str:
    results = segment_refresh_all()
    return (f"{len(results)} segments: {sum(len(r.entered) for r in results)} entered, "
            f"{sum(len(r.exited) for r in results)} exited")


def scores_refresh() -> str:
    return f"RFM for {rfm_refresh()} customers, send hours for {send_hours_refresh()} contacts"


def clv_refit() -> str:
    try:
        result = clv_fit()
    except NotEnoughData as e:
        return f"skipped: {e}"
    return f"CLV fitted on {result.fit.customers} customers, {result.scored} scored"


def segments_refresh_for_events(event_ids: list[int]) -> str:
    """For ingestion paths that prefer to hand the segment update to a worker instead of the receiver."""
    from segments.incremental import on_events_ingested

    on_events_ingested(sender=None, event_ids=event_ids)
    return f"segments updated for {len(event_ids)} events"
