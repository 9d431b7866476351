from django.db import migrations

from scrm.dbtriggers import capture_changes

# Services record their own events (the triggers stand aside inside them); the triggers catch any
# write made outside a service. Run logs are written by the nightly services only, but are business
# rows too.
TABLES = [
    ("loyalty_loyaltyprogram", "loyalty.loyaltyprogram", ""),
    ("loyalty_tierrule", "loyalty.tierrule", ""),
    ("loyalty_benefit", "loyalty.benefit", ""),
    ("loyalty_orderpoints", "loyalty.orderpoints", ""),
    ("loyalty_tierstanding", "loyalty.tierstanding", ""),
    ("loyalty_tierchange", "loyalty.tierchange", ""),
    ("loyalty_coupontemplate", "loyalty.coupontemplate", ""),
    ("loyalty_coupon", "loyalty.coupon", "redeemed_store_id"),
    ("loyalty_loyaltyrun", "loyalty.loyaltyrun", ""),
]

# History is append-only: a tier change or a run log is never rewritten.
APPEND_ONLY = """
CREATE TRIGGER loyalty_tierchange_append_only
    BEFORE UPDATE OR DELETE ON loyalty_tierchange
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
CREATE TRIGGER loyalty_loyaltyrun_append_only
    BEFORE UPDATE OR DELETE ON loyalty_loyaltyrun
    FOR EACH ROW EXECUTE FUNCTION scrm_refuse_change();
"""
APPEND_ONLY_REVERSE = """
DROP TRIGGER IF EXISTS loyalty_loyaltyrun_append_only ON loyalty_loyaltyrun;
DROP TRIGGER IF EXISTS loyalty_tierchange_append_only ON loyalty_tierchange;
"""


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0001_initial"), ("scrm", "0005_capture_changes_function")]
    operations = [
        *(migrations.RunSQL(*capture_changes(table, label, store)) for table, label, store in TABLES),
        migrations.RunSQL(APPEND_ONLY, APPEND_ONLY_REVERSE),
    ]
