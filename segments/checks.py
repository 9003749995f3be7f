from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_database_settings(app_configs, **kwargs) -> list:
    """Warn about settings measured to cripple the task queue (benchmark B6)."""
    problems = []
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql") and not db.get("CONN_MAX_AGE"):
        problems.append(Warning(
            "CONN_MAX_AGE is 0 on PostgreSQL.",
            hint="The django-q2 ORM broker then opens a new connection for every enqueue, dequeue and ack "
                 "(measured 37 tasks/s instead of 589). Leave CONN_MAX_AGE unset (600) or set it above 0.",
            id="segments.W001",
        ))
    if db["ENGINE"].endswith("sqlite3") and db.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
        problems.append(Warning(
            "SQLite transaction_mode is not IMMEDIATE.",
            hint="With several qcluster workers, read-then-write transactions fail with 'database is locked'.",
            id="segments.W002",
        ))
    q = settings.Q_CLUSTER
    if q.get("timeout") and q.get("retry") and q["retry"] <= q["timeout"]:
        problems.append(Warning(
            "Q_CLUSTER retry is not greater than timeout.",
            hint="A task still running when retry expires is handed out again and runs twice.",
            id="segments.W003",
        ))
    return problems
