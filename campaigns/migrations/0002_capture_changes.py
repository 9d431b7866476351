from django.db import migrations

from scrm.dbtriggers import capture_changes

# Services record their own events (the triggers stand aside inside them); the triggers catch any
# write made outside a service.
TABLES = [
    ("campaigns_segment", "campaigns.segment", ""),
    ("campaigns_script", "campaigns.script", ""),
    ("campaigns_contactpolicy", "campaigns.contactpolicy", ""),
    ("campaigns_campaign", "campaigns.campaign", ""),
    ("campaigns_journey", "campaigns.journey", ""),
    ("campaigns_journeystep", "campaigns.journeystep", ""),
    ("campaigns_festival", "campaigns.festival", ""),
    ("campaigns_campaignrun", "campaigns.campaignrun", ""),
    ("campaigns_runstore", "campaigns.runstore", "store_id"),
    ("campaigns_runmember", "campaigns.runmember", "store_id"),
    ("campaigns_task", "campaigns.task", "store_id"),
]


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0001_initial"), ("scrm", "0005_capture_changes_function")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
