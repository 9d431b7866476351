from django.db import migrations

from scrm.dbtriggers import FUNCTION_REVERSE_SQL, FUNCTION_SQL


class Migration(migrations.Migration):
    dependencies = [("scrm", "0004_audit_hash_chain")]
    operations = [migrations.RunSQL(FUNCTION_SQL, FUNCTION_REVERSE_SQL)]
