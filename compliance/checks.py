from django.conf import settings
from django.core.checks import Warning, register


@register(deploy=True)  # production settings: shown by `manage.py check --deploy`
def compliance_settings(app_configs, **kwargs) -> list:
    if settings.DEBUG:
        return []
    problems = []
    if not settings.SITE_URL.startswith("https://"):
        problems.append(Warning("SITE_URL is not https: RFC 8058 one-click unsubscribe needs an HTTPS URL.",
                                id="compliance.W001"))
    if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
        problems.append(Warning("ANYMAIL_WEBHOOK_SECRET is not set: ESP webhooks are open to anyone.",
                                id="compliance.W002"))
    if settings.COMPLIANCE["HASH_PEPPER"].startswith("pepper:"):
        problems.append(Warning("COMPLIANCE_HASH_PEPPER is not set: the suppression hashes depend on SECRET_KEY "
                                "and stop matching if it is rotated.", id="compliance.W003"))
    return problems
