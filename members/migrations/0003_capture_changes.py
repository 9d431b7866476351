from django.db import migrations

from scrm.dbtriggers import capture_changes

# Points entries and consent records are append-only (UPDATE/DELETE refused), so only their inserts
# can bypass a service; the triggers catch those too.
TABLES = [
    ("members_tier", "members.tier", ""),
    ("members_member", "members.member", "home_store_id"),
    ("members_externalidentity", "members.externalidentity", ""),
    ("members_tag", "members.tag", ""),
    ("members_membertag", "members.membertag", ""),
    ("members_pointsentry", "members.pointsentry", ""),
    ("members_order", "members.order", "store_id"),
    ("members_orderline", "members.orderline", ""),
    ("members_consentrecord", "members.consentrecord", "store_id"),
    ("members_guideassignment", "members.guideassignment", ""),
]


class Migration(migrations.Migration):
    dependencies = [("members", "0002_ledger_triggers"), ("scrm", "0005_capture_changes_function")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
