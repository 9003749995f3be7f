from django.contrib import messages
from django.utils.translation import gettext as _


class ReputationWarningMiddleware:
    """Show staff a warning on admin pages while marketing is paused for sender reputation."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "GET" and request.path.startswith("/admin/") and getattr(request, "user", None) \
                and request.user.is_active and request.user.is_staff:
            from compliance.models import SenderPause

            pause = SenderPause.objects.filter(resumed_at__isnull=True).first()
            if pause:
                messages.warning(request, _("Marketing %(channel)s is paused to protect your sender reputation: "
                                            "%(reason)s. Fix the cause, then resume it under Compliance › Sender "
                                            "pauses.") % {"channel": pause.channel, "reason": pause.reason})
        return self.get_response(request)
