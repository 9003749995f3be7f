from django.db import migrations

# The varchar_pattern_ops ("_like") indexes PostgreSQL's schema editor adds beside every unique or
# indexed CharField, so that LIKE 'x%' can use an index. No query on these columns is a prefix
# match: exact look-ups use the unique / plain index, the admin's search is a case-insensitive
# "contains" that no B-tree serves. Each one only cost every contact written (B1: 3 of the 11
# indexes an imported row updated). Generated names, the same on every PostgreSQL database.
# A later AlterField of one of these fields would create its index again: drop it again then.
LIKE_INDEXES = [
    ("email", "segments_contact_email_7e88019e_like"),
    ("phone", "segments_contact_phone_c7805379_like"),
    ("source", "segments_contact_source_c0422925_like"),
]


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for _column, index in LIKE_INDEXES:
            schema_editor.execute(f'DROP INDEX IF EXISTS "{index}"')


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for column, index in LIKE_INDEXES:
            schema_editor.execute(
                f'CREATE INDEX IF NOT EXISTS "{index}" ON "segments_contact" ("{column}" varchar_pattern_ops)')


class Migration(migrations.Migration):
    """Contacts on PostgreSQL lose the three LIKE-prefix indexes no query uses (see LIKE_INDEXES)."""

    dependencies = [
        ('segments', '0004_event_contact_index_in_composite'),
    ]

    operations = [migrations.RunPython(drop, create, elidable=False)]
