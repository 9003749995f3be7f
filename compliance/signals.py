"""Signals compliance sends to higher apps (which import compliance, never the other way round).

sunset_entered
    Sent after commit when the sunset sweep puts contacts in the sunset segment (no open or click
    for COMPLIANCE["SUNSET_DAYS"]). The automation app starts its re-engagement flow from it; the
    gate keeps allowing marketing to them until the grace period ends and the sweep suppresses
    them. kwargs: contact_ids (list[int]).

sender_paused
    Sent after commit when the reputation guard pauses marketing on a channel.
    kwargs: pause (compliance.SenderPause).
"""

from django.dispatch import Signal

sunset_entered = Signal()
sender_paused = Signal()
