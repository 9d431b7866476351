from django.db import migrations

from scrm.dbtriggers import capture_changes

TABLES = [
    ("api_apiclient", "api.apiclient", ""),
    ("api_apiclient_stores", "api.apiclient_stores", ""),
    ("api_mergeproposal", "api.mergeproposal", ""),
    ("api_webhookendpoint", "api.webhookendpoint", ""),
    ("api_webhookdelivery", "api.webhookdelivery", ""),
    ("api_guidetoken", "api.guidetoken", ""),
]


class Migration(migrations.Migration):
    dependencies = [("api", "0001_initial"), ("scrm", "0005_capture_changes_function")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
