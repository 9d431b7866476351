from django.db import migrations

from scrm.dbtriggers import capture_changes

# The facts are written by dashboard.refresh inside an audited transaction (one summary event per
# refresh); the triggers catch any write that bypasses it.
TABLES = [
    ("dashboard_weekfact", "dashboard.weekfact", ""),
    ("dashboard_kpifact", "dashboard.kpifact", ""),
    ("dashboard_tierfact", "dashboard.tierfact", ""),
    ("dashboard_campaignresult", "dashboard.campaignresult", ""),
]


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0001_facts"), ("scrm", "0005_capture_changes_function")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
