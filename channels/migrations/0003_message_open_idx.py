"""The ids of messages still on their way, on PostgreSQL (see channels.models.OPEN_STATUSES)."""

from django.db import migrations

OPEN_STATUSES = ["queued", "claimed", "sending", "deferred"]  # as channels.models has them (frozen here)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        statuses = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
        schema_editor.execute("CREATE INDEX IF NOT EXISTS message_open_idx ON channels_message (id) "
                              f"WHERE status IN ({statuses})")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS message_open_idx")


class Migration(migrations.Migration):
    dependencies = [("channels", "0002_send_rate_limit")]

    operations = [migrations.RunPython(create, drop)]
