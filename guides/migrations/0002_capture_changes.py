from django.db import migrations

from scrm.dbtriggers import capture_changes

# Services record their own events (the triggers stand aside inside them); the triggers catch any
# write made outside a service.
TABLES = [("guides_membernote", "guides.membernote", "")]


class Migration(migrations.Migration):
    dependencies = [("guides", "0001_member_notes"), ("scrm", "0005_capture_changes_function")]
    operations = [migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES]
