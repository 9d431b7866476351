"""Index for segment conditions on order lines ("bought category / SKU in the last N days").

Segments find a member's orders in a window through ``order_member_paid_idx``, then test each order's
lines: with category and SKU in the index, that test reads no table pages. Raw SQL: the index serves
queries only and is no part of the models' state.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0014_order_member_covering_index"),
    ]

    operations = [
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS orderline_order_category_sku_idx "
            "ON members_orderline (order_id) INCLUDE (category, sku)",
            reverse_sql="DROP INDEX IF EXISTS orderline_order_category_sku_idx",
        ),
    ]
