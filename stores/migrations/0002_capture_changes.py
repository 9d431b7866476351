from django.db import migrations

from scrm.dbtriggers import capture_changes


class Migration(migrations.Migration):
    dependencies = [("stores", "0001_initial"), ("scrm", "0005_capture_changes_function")]
    operations = [
        migrations.RunSQL(*capture_changes("stores_region", "stores.region")),
        migrations.RunSQL(*capture_changes("stores_store", "stores.store", "id")),
        migrations.RunSQL(*capture_changes("stores_guide", "stores.guide", "store_id")),
    ]
