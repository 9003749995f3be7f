from django.contrib import admin
from django.utils.translation import gettext_lazy as _


class ShopAdminSite(admin.AdminSite):
    site_header = _("Shop marketing automation")
    site_title = _("Shop marketing")
    index_title = _("Dashboard")
    index_template = "admin/dashboard.html"

    def index(self, request, extra_context=None):
        from segments.dashboard import headline_numbers

        extra_context = {**(extra_context or {}), "headline": headline_numbers()}
        return super().index(request, extra_context)
