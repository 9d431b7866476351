from django.db import migrations

from scrm.dbtriggers import capture_changes

# Lifecycle transitions and RFM edges are written by the metrics services inside an audited
# transaction; the triggers catch any write that bypasses them, settings rows included.
TABLES = [
    ("members_lifecyclesettings", "members.lifecyclesettings", ""),
    ("members_rfmsettings", "members.rfmsettings", ""),
    ("members_rfmbinedges", "members.rfmbinedges", ""),
    ("members_lifecycletransition", "members.lifecycletransition", ""),
]


class Migration(migrations.Migration):
    dependencies = [("members", "0011_intelligence")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
