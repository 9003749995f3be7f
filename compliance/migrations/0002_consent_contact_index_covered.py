import django.db.models.deletion
from django.db import migrations, models

# The index each ForeignKey had of its own (Django's generated names, the same on every backend).
# Dropped by name: an AlterField would also drop and re-validate the foreign keys on PostgreSQL
# and copy both tables on SQLite; the constraints themselves stay exactly as they are.
DROPPED = [
    ("compliance_consent", "compliance_consent_contact_id_c9719093"),
    ("compliance_consentevent", "compliance_consentevent_contact_id_13432992"),
]


class Migration(migrations.Migration):
    """Consent and ConsentEvent lose their single-column contact index: consent_one_per_channel
    (contact, channel) and consentevent_contact_idx (contact, channel, recorded_at) serve every
    look-up by contact, and the duplicate only cost each import write (B1)."""

    dependencies = [
        ('compliance', '0001_initial'),
        ('segments', '0004_event_contact_index_in_composite'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(f'DROP INDEX IF EXISTS "{index}"',
                                  reverse_sql=f'CREATE INDEX "{index}" ON "{table}" ("contact_id")')
                for table, index in DROPPED
            ],
            state_operations=[
                migrations.AlterField(
                    model_name='consent',
                    name='contact',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name='consents', to='segments.contact'),
                ),
                migrations.AlterField(
                    model_name='consentevent',
                    name='contact',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name='consent_events', to='segments.contact'),
                ),
            ],
        ),
    ]
