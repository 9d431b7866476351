from django.db import migrations

from scrm.dbtriggers import capture_changes


class Migration(migrations.Migration):
    dependencies = [("members", "0006_privacy")]
    operations = [
        migrations.RunSQL(*capture_changes("members_privacynotice", "members.privacynotice")),
        migrations.RunSQL(*capture_changes("members_datasubjectrequest", "members.datasubjectrequest")),
    ]
