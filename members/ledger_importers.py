"""Importers for what members accumulate: orders with lines, tags, points adjustments, consent events.

Same pipeline as the member importer (scrm.imports): rows are cleaned in Python, staged with COPY and
written set-based in one transaction per file, with one audit event. These importers never create
members: a mobile must belong to a member already (orders also take rows without a mobile, for
buyers who are not members).
"""

from __future__ import annotations

import datetime
import unicodedata
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scrm.import_helpers import (
    alias_choices,
    alias_expected,
    alias_options,
    clean_lookup,
    optional,
    padded_row,
    target_counts,
)
from scrm.imports import (
    CellError,
    Column,
    FileRefused,
    Importer,
    ImportNotAllowed,
    RowInvalid,
    clean_choice,
    clean_datetime,
    clean_decimal,
    clean_int,
    clean_text,
    insert_defaults,
    is_empty,
    register,
    split_tags,
)
from scrm.imports import (
    _text as cell_text,
)

from . import consent
from .importers import _channel_options, channel_choices, clean_mobile, pg_text_array
from .metrics import refresh_member_metrics
from .models import ConsentRecord, ContactChannel, Member, MemberTag, Order, PointsEntry

# Messages for empty required cells: lazy, so a clean row costs no translation lookup.
ENTER_MOBILE = gettext_lazy("Enter a mobile number.")
ENTER_CHANNEL = gettext_lazy("Enter the channel.")
ENTER_ORDER_NO = gettext_lazy("Enter the order number.")
ENTER_PAID_AT = gettext_lazy("Enter the time paid.")
ENTER_LINE_NO = gettext_lazy("Enter the line number.")
ENTER_SKU = gettext_lazy("Enter the SKU.")
ENTER_QUANTITY = gettext_lazy("Enter the quantity.")
ENTER_POINTS = gettext_lazy("Enter the points.")
ENTER_REF = gettext_lazy("Enter the reference.")
ENTER_CONTACT_CHANNEL = gettext_lazy("Enter the contact channel.")
ENTER_TIME = gettext_lazy("Enter the time.")
ENTER_ACTION = gettext_lazy("Enter the action.")

MOBILE_ALIASES = ("手机号", "手机", "手机号码", "会员手机号", "phone", "mobile number", "mobile phone")


def _unknown_store(code: str) -> str:
    return _("No store has the code “%(code)s”.") % {"code": code}


def _unknown_guide(number: str) -> str:
    return _("No guide has the employee number “%(no)s”.") % {"no": number}


def _unknown_member(mobile: str) -> str:
    return _("No member has the mobile %(mobile)s.") % {"mobile": mobile}


def _member_problems(cursor: Any, *, for_order: bool = False) -> list[tuple[int, str, str]]:
    """Staged rows whose mobile belongs to no member."""
    cursor.execute(
        """
        SELECT s.row_no, s.mobile FROM import_staging s
         WHERE s.mobile IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM members_member m WHERE m.mobile = s.mobile)
        """
    )
    hint = " " + _("Leave the mobile empty for a buyer who is not a member.") if for_order else ""
    return [(row, "mobile", _unknown_member(mobile) + hint) for row, mobile in cursor.fetchall()]


_clean_mobile = optional(clean_mobile)


def _mobile(importer: Importer, cells: list[Any], problems: list[tuple[str, str]]) -> str | None:
    return importer.clean_cell(cells, "mobile", _clean_mobile, problems, missing=ENTER_MOBILE)


# --------------------------------------------------------------------------------------------------
# Orders with lines

# Transaction-level advisory locks serialising the writes of one kind of import ("ORDS", "CNST").
ORDERS_IMPORT_LOCK = 0x4F524453
CONSENT_IMPORT_LOCK = 0x434E5354

ORDER_STATUS_ALIASES = {
    Order.Status.PAID: ("已支付", "已付款", "交易成功", "已完成", "paid"),
    Order.Status.PARTIALLY_REFUNDED: ("部分退款", "partially refunded", "partial refund"),
    Order.Status.REFUNDED: ("已退款", "全额退款", "退款成功", "refunded"),
    Order.Status.CANCELLED: ("已取消", "取消", "交易关闭", "cancelled", "canceled"),
}
ORDER_STATUS_DISPLAY = {status.value: names[0] for status, names in ORDER_STATUS_ALIASES.items()}

# The order's own columns, repeated on each of its lines; they must agree within an order.
ORDER_HEADER = ("mobile", "store_id", "guide_id", "paid_at", "amount", "refunded", "status")

# Each staged order once (its first row), with the values it will have: member by mobile, amount as
# given or the sum of its lines, refund and status as given or derived, or kept from the stored order
# when the row leaves them empty. Shared by the checks (late_problems) and the writes.
_ORDERS_SQL = """
SELECT h.channel, h.order_no, h.row_no AS first_row, a.row_count, a.line_sum, a.item_count,
       h.mobile, m.id AS member_id, h.store_id, h.guide_id, h.paid_at, h.amount AS given_amount,
       h.refunded AS given_refunded, h.status AS given_status,
       e.id AS order_id, e.member_id AS o_member_id, e.store_id AS o_store_id, e.guide_id AS o_guide_id,
       e.paid_at AS o_paid_at, e.amount AS o_amount, e.refunded_amount AS o_refunded,
       e.item_count AS o_item_count, e.status AS o_status,
       d.amount, d.refunded,
       COALESCE(h.status,
                CASE WHEN h.refunded IS NULL AND e.status IN ('cancelled') THEN e.status END,
                CASE WHEN d.refunded = 0 THEN 'paid'
                     WHEN d.refunded >= d.amount THEN 'refunded'
                     ELSE 'partially_refunded' END) AS status
  FROM (SELECT DISTINCT ON (channel, order_no) * FROM import_staging ORDER BY channel, order_no, row_no) h
  JOIN (SELECT channel, order_no, count(*) AS row_count, sum(line_amount) AS line_sum,
               sum(quantity) AS item_count
          FROM import_staging GROUP BY channel, order_no) a USING (channel, order_no)
  LEFT JOIN members_member m ON m.mobile = h.mobile
  LEFT JOIN members_order e ON e.channel = h.channel AND e.external_no = h.order_no
  CROSS JOIN LATERAL (
      SELECT COALESCE(h.amount, a.line_sum) AS amount,
             COALESCE(h.refunded,
                      CASE h.status WHEN 'refunded' THEN COALESCE(h.amount, a.line_sum)
                                    WHEN 'paid' THEN 0 END,
                      CASE WHEN h.status IS NULL THEN e.refunded_amount END,
                      0) AS refunded
  ) d
"""


def _order_no(value: Any) -> str | None:
    """Order numbers are text: a long number Excel stored as a float has lost its last digits."""
    if is_empty(value):
        return None
    if isinstance(value, float) and abs(value) >= 1e15:
        raise CellError(
            _("The order number was stored as a number and lost digits; format the column as text.")
        )
    text = unicodedata.normalize("NFKC", cell_text(value)).strip()
    if len(text) > 64:
        raise CellError(_("Longer than %(max)d characters.") % {"max": 64})
    return text


@register
class OrderImporter(Importer):
    """Orders by channel and order number, one row per order line; the order's columns repeated."""

    name = "orders"
    verbose_name = gettext_lazy("orders")
    description = gettext_lazy(
        "One row per order line, the order's columns repeated on each of its lines; an order is found "
        "by channel and order number, and is imported whole or not at all. The member is found by "
        "mobile (empty for a buyer who is not a member). The order amount, when given, must be the sum "
        "of the line amounts. A known order is updated to what the file says (its lines replaced); "
        "the members' purchase figures are recomputed."
    )
    model = Order
    key_index = 3  # the line key: channel, order number and line number (or SKU)
    key_column = "order_no"
    key_label = gettext_lazy("This order line")
    columns = (
        Column(
            "channel",
            gettext_lazy("Channel"),
            ("渠道", "下单渠道", "销售渠道", "订单渠道", "channel"),
            required=True,
            example="天猫",
            choices=_channel_options,
            width=12,
        ),
        Column(
            "order_no",
            gettext_lazy("Order number"),
            ("订单号", "订单编号", "单号", "order no", "order id"),
            required=True,
            example="T20240506001",
            width=20,
        ),
        Column(
            "paid_at",
            gettext_lazy("Paid at"),
            ("支付时间", "付款时间", "下单时间", "交易时间", "paid time", "order time"),
            required=True,
            example=datetime.datetime(2024, 5, 6, 14, 30),
            width=17,
        ),
        Column("mobile", gettext_lazy("Member mobile"), (*MOBILE_ALIASES, "mobile"), example="13812345678"),
        Column(
            "store",
            gettext_lazy("Store code"),
            ("门店编码", "门店代码", "门店编号", "下单门店", "store"),
            example="SH001",
            width=12,
        ),
        Column(
            "guide",
            gettext_lazy("Guide employee number"),
            ("导购工号", "导购编号", "导购", "guide", "employee number"),
            example="E00001",
        ),
        Column("amount", gettext_lazy("Order amount"), ("订单金额", "实付金额", "order total"), example=299),
        Column(
            "refunded",
            gettext_lazy("Refunded amount"),
            ("退款金额", "已退款金额", "refund", "refund amount"),
            example=0,
        ),
        Column(
            "status",
            gettext_lazy("Order status"),
            ("订单状态", "状态", "status"),
            example="已支付",
            choices=lambda: alias_options(ORDER_STATUS_ALIASES),
            width=12,
        ),
        Column("line_no", gettext_lazy("Line number"), ("行号", "明细行号", "line", "line no"), example=1),
        Column(
            "sku",
            gettext_lazy("SKU"),
            ("商品编码", "商品货号", "货号", "sku code", "product code"),
            required=True,
            example="SKU-1001",
        ),
        Column(
            "product",
            gettext_lazy("Product name"),
            ("商品名称", "商品", "品名", "product"),
            example="保湿精华 30ml",
            width=20,
        ),
        Column(
            "category", gettext_lazy("Category"), ("品类", "商品品类", "类目", "category"), example="护肤"
        ),
        Column("quantity", gettext_lazy("Quantity"), ("数量", "件数", "qty"), required=True, example=1),
        Column(
            "line_amount",
            gettext_lazy("Line amount"),
            ("商品金额", "行金额", "明细金额", "小计", "line total"),
            required=True,
            example=299,
        ),
    )
    staging = (
        ("channel", "text"),
        ("order_no", "text"),
        ("line_key", "text"),
        ("line_no", "integer"),
        ("mobile", "text"),
        ("store_id", "bigint"),
        ("guide_id", "bigint"),
        ("paid_at", "timestamptz"),
        ("amount", "numeric(12,2)"),
        ("refunded", "numeric(12,2)"),
        ("status", "text"),
        ("sku", "text"),
        ("product", "text"),
        ("category", "text"),
        ("quantity", "integer"),
        ("line_amount", "numeric(12,2)"),
    )

    def prepare(self, cursor: Any) -> None:
        cursor.execute("SELECT code, id FROM stores_store")
        self.stores: dict[str, int] = dict(cursor.fetchall())
        cursor.execute("SELECT employee_no, id FROM stores_guide")
        self.guides: dict[str, int] = {no.strip().upper(): pk for no, pk in cursor.fetchall()}
        self.channels = channel_choices()
        self.channel_expected = " / ".join(_channel_options())
        self.statuses = alias_choices(ORDER_STATUS_ALIASES)
        self.status_expected = alias_expected(ORDER_STATUS_ALIASES)
        self.latest = self.context.now + datetime.timedelta(days=1)
        self.last_raw_paid_at: Any = None
        self.last_paid_at: datetime.datetime | None = None

    def bind(self, headers: Any) -> None:
        super().bind(headers)
        self.numbered = "line_no" in self.index

    def _order_key(self, cells: list[Any]) -> tuple[str, str] | None:
        """Channel and order number of a row, if they are readable (to refuse the order's other lines)."""
        try:
            channel = clean_choice(self.cell(cells, "channel"), self.channels, expected="")
            number = _order_no(self.cell(cells, "order_no"))
        except CellError:
            return None
        return (channel, number) if channel and number else None

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []
        add = problems.append

        # Fast paths (exact dictionary hits, a time seen on the order's previous line) before the full
        # cleaners: the order's columns repeat on every line.
        raw = self.cell(cells, "channel")
        channel = self.channels.get(raw) if type(raw) is str else None
        if channel is None:
            channel = self.clean_cell(
                cells,
                "channel",
                clean_choice,
                problems,
                missing=ENTER_CHANNEL,
                choices=self.channels,
                expected=self.channel_expected,
            )
        number = self.clean_cell(cells, "order_no", _order_no, problems, missing=ENTER_ORDER_NO)
        raw = self.cell(cells, "paid_at")
        if raw.__hash__ is not None and raw == self.last_raw_paid_at and raw != "":
            paid_at = self.last_paid_at
        else:
            paid_at = self.clean_cell(cells, "paid_at", clean_datetime, problems, missing=ENTER_PAID_AT)
            self.last_raw_paid_at, self.last_paid_at = raw, paid_at
        if paid_at is not None and paid_at > self.latest:
            add(("paid_at", _("The time paid is in the future.")))

        mobile = self.clean_cell(cells, "mobile", _clean_mobile, problems)

        raw = self.cell(cells, "store")
        store_id = self.stores.get(raw) if type(raw) is str else None
        if store_id is None:
            store_id = clean_lookup(self, cells, "store", problems, self.stores, _unknown_store)
        guide_id = clean_lookup(self, cells, "guide", problems, self.guides, _unknown_guide)

        amounts = {}
        for key in ("amount", "refunded", "line_amount"):
            value = self.clean_cell(cells, key, clean_decimal, problems)
            if value is not None and value < 0:
                add((key, _("An amount cannot be negative.")))
            elif value is not None and value >= 10**10:
                add((key, _("The amount is too large.")))
            amounts[key] = value
        if amounts["line_amount"] is None and not is_empty(self.cell(cells, "sku")):
            add(("line_amount", _("Enter the line amount.")))

        status = self.clean_cell(
            cells, "status", clean_choice, problems, choices=self.statuses, expected=self.status_expected
        )

        line_no = self.clean_cell(
            cells,
            "line_no",
            clean_int,
            problems,
            missing=ENTER_LINE_NO if self.numbered else None,
        )
        if line_no is not None and not 1 <= line_no <= 32767:
            add(("line_no", _("The line number must be between 1 and 32767.")))
        sku = self.clean_cell(cells, "sku", clean_text, problems, missing=ENTER_SKU, max_length=64)
        product = self.clean_cell(cells, "product", clean_text, problems, max_length=128)
        category = self.clean_cell(cells, "category", clean_text, problems, max_length=64)
        quantity = self.clean_cell(cells, "quantity", clean_int, problems, missing=ENTER_QUANTITY)
        if quantity is not None and not 0 < quantity < 2**31:
            add(("quantity", _("The quantity must be a positive whole number.")))

        if problems:
            raise RowInvalid(problems)
        # Without a line-number column, the same SKU twice in one order is taken for a repeated row.
        line_key = f"{channel}\x1f{number}\x1f{line_no if self.numbered else sku}"
        return (
            row_no,
            channel,
            number,
            line_key,
            line_no,
            mobile,
            store_id,
            guide_id,
            paid_at,
            amounts["amount"],
            amounts["refunded"],
            status,
            sku,
            product,
            category,
            quantity,
            amounts["line_amount"],
        )

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        cursor.execute("ANALYZE import_staging")  # self-joins below: let the planner see its size
        problems = _member_problems(cursor, for_order=True)
        # The order's columns must agree on all its lines.
        columns = ", ".join(ORDER_HEADER)
        first = ", ".join(f"f.{name}" for name in ORDER_HEADER)
        mine = ", ".join(f"s.{name}" for name in ORDER_HEADER)
        cursor.execute(
            f"""
            SELECT s.row_no, f.row_no
              FROM import_staging s
              JOIN (SELECT DISTINCT ON (channel, order_no) channel, order_no, row_no, {columns}
                      FROM import_staging ORDER BY channel, order_no, row_no) f USING (channel, order_no)
             WHERE ({mine}) IS DISTINCT FROM ({first})
            """
        )
        for row, first_row in cursor.fetchall():
            problems.append(
                (
                    row,
                    "order_no",
                    _(
                        "The order's columns (member, store, guide, time, amounts, status) differ from "
                        "its line in row %(row)d; repeat them unchanged on every line."
                    )
                    % {"row": first_row},
                )
            )
        cursor.execute(
            f"""
            SELECT first_row, given_amount, line_sum, amount, refunded, status, given_status, order_id
              FROM ({_ORDERS_SQL}) o
            """
        )
        for first_row, given, line_sum, amount, refunded, status, given_status, _order in cursor.fetchall():
            if given is not None and given != line_sum:
                problems.append(
                    (
                        first_row,
                        "amount",
                        _("The order amount %(amount)s is not the sum of its line amounts (%(sum)s).")
                        % {"amount": given, "sum": line_sum},
                    )
                )
            elif refunded > amount:
                problems.append(
                    (
                        first_row,
                        "refunded",
                        _("The refunded amount %(refunded)s is more than the order amount %(amount)s.")
                        % {"refunded": refunded, "amount": amount},
                    )
                )
            elif given_status is not None and (
                (status == Order.Status.PAID and refunded != 0)
                or (status == Order.Status.REFUNDED and refunded != amount)
                or (status == Order.Status.PARTIALLY_REFUNDED and not 0 < refunded < amount)
            ):
                problems.append(
                    (
                        first_row,
                        "status",
                        _("The status “%(status)s” does not fit the refunded amount %(refunded)s.")
                        % {"status": ORDER_STATUS_DISPLAY[status], "refunded": refunded},
                    )
                )
        return problems

    def linked_problems(self, cursor: Any, invalid: dict[int, Any]) -> list[tuple[int, str, str]]:
        # An order is imported whole: any refused line refuses the order's other lines.
        bad: dict[tuple[str, str], int] = {}
        for row_no, (cells, _problems) in sorted(invalid.items()):
            key = self._order_key(self.padded(list(cells)))
            if key is not None:
                bad.setdefault(key, row_no)
        if not bad:
            return []
        keys = list(bad)
        cursor.execute(
            """
            SELECT s.row_no, s.channel, s.order_no FROM import_staging s
              JOIN unnest(%s::text[], %s::text[]) AS b(channel, order_no) USING (channel, order_no)
            """,
            [[k[0] for k in keys], [k[1] for k in keys]],
        )
        return [
            (
                row,
                "order_no",
                _(
                    "Another line of this order (row %(row)d) is invalid; an order is imported whole or "
                    "not at all."
                )
                % {"row": bad[(channel, number)]},
            )
            for row, channel, number in cursor.fetchall()
        ]

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(self, "store_codes"):
            self.store_codes = {pk: code for code, pk in self.stores.items()}
            self.guide_numbers = {pk: no for no, pk in self.guides.items()}
        values = {key: value for key, value in staged.items() if key in self.index}
        values.update(
            {
                "store": self.store_codes.get(staged.get("store_id"), ""),
                "guide": self.guide_numbers.get(staged.get("guide_id"), ""),
                "status": ORDER_STATUS_DISPLAY.get(staged.get("status") or "", ""),
            }
        )
        return values

    COMPARED = ("member_id", "store_id", "guide_id", "paid_at", "amount", "refunded", "item_count", "status")
    STORED = ("o_member_id", "o_store_id", "o_guide_id", "o_paid_at", "o_amount", "o_refunded")
    STORED += ("o_item_count", "o_status")

    def _build_target(self, cursor: Any) -> dict[str, int]:
        cursor.execute(
            """
            CREATE TEMP TABLE import_lines ON COMMIT DROP AS
            SELECT channel, order_no,
                   COALESCE(line_no, row_number() OVER (PARTITION BY channel, order_no ORDER BY row_no))::int
                       AS line_no,
                   sku, COALESCE(product, '') AS name, COALESCE(category, '') AS category, quantity,
                   line_amount AS amount
              FROM import_staging
            """
        )
        new = ", ".join(self.COMPARED)
        old = ", ".join(self.STORED)
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT o.*,
                   o.order_id IS NOT NULL AND ({new}) IS DISTINCT FROM ({old}) AS order_changed,
                   false AS lines_changed
              FROM ({_ORDERS_SQL}) o
            """
        )
        cursor.execute("ANALYZE import_target, import_lines")
        # Lines compared as one sorted signature per order, staged against stored (set-based: a
        # correlated comparison per order would be quadratic in the file).
        line = "ROW({p}line_no, {p}sku, {p}name, {p}category, {p}quantity, {p}amount)::text"
        cursor.execute(
            f"""
            UPDATE import_target t SET lines_changed = true
              FROM import_target k
              JOIN (SELECT channel, order_no, array_agg({line.format(p="")} ORDER BY line_no) AS lines
                      FROM import_lines GROUP BY channel, order_no) s
                ON s.channel = k.channel AND s.order_no = k.order_no
              JOIN (SELECT l.order_id, array_agg({line.format(p="l.")} ORDER BY l.line_no) AS lines
                      FROM members_orderline l JOIN import_target x ON x.order_id = l.order_id
                     GROUP BY l.order_id) e
                ON e.order_id = k.order_id
             WHERE t.order_id = k.order_id AND s.lines IS DISTINCT FROM e.lines
            """
        )
        # An order stored without any line (not by this importer) gets the file's lines.
        cursor.execute(
            """
            UPDATE import_target t SET lines_changed = true
             WHERE t.order_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM members_orderline l WHERE l.order_id = t.order_id)
            """
        )
        return target_counts(
            cursor,
            new="order_id IS NULL",
            updated="order_changed OR lines_changed",
            unchanged="order_id IS NOT NULL AND NOT order_changed AND NOT lines_changed",
            rows="row_count",
        )

    def classify(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor)
        cursor.execute("DROP TABLE import_lines")
        return counts

    def write(self, cursor: Any) -> dict[str, int]:
        # Order imports take turns: two files with the same new order would both insert its lines.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ORDERS_IMPORT_LOCK])
        counts = self._build_target(cursor)
        listed = ("channel", "external_no", "member_id", "store_id", "guide_id", "paid_at", "amount")
        listed += ("refunded_amount", "item_count", "status", "created_at")
        more_columns, more_values, more_params = insert_defaults(Order, listed)
        cursor.execute(
            f"""
            INSERT INTO members_order AS o (channel, external_no, member_id, store_id, guide_id, paid_at,
                                            amount, refunded_amount, item_count, status,
                                            created_at{more_columns})
            SELECT channel, order_no, member_id, store_id, guide_id, paid_at, amount, refunded, item_count,
                   status, %(now)s{more_values}
              FROM import_target WHERE order_id IS NULL OR order_changed
            ON CONFLICT (channel, external_no) DO UPDATE
               SET member_id = EXCLUDED.member_id, store_id = EXCLUDED.store_id,
                   guide_id = EXCLUDED.guide_id, paid_at = EXCLUDED.paid_at, amount = EXCLUDED.amount,
                   refunded_amount = EXCLUDED.refunded_amount, item_count = EXCLUDED.item_count,
                   status = EXCLUDED.status
            """,
            {"now": self.context.now, **more_params},
        )
        cursor.execute(
            """
            DELETE FROM members_orderline l USING import_target t
             WHERE l.order_id = t.order_id AND t.lines_changed
            """
        )
        cursor.execute(
            """
            INSERT INTO members_orderline (order_id, line_no, sku, name, category, quantity, amount)
            SELECT o.id, il.line_no, il.sku, il.name, il.category, il.quantity, il.amount
              FROM import_target t
              JOIN import_lines il ON il.channel = t.channel AND il.order_no = t.order_no
              JOIN members_order o ON o.channel = t.channel AND o.external_no = t.order_no
             WHERE t.order_id IS NULL OR t.lines_changed
            """
        )
        # The buyers' purchase figures, by the same statement as members.services.record_orders: the
        # members the orders belong to now, and those they belonged to before a change.
        cursor.execute(
            """
            SELECT member_id FROM import_target
             WHERE member_id IS NOT NULL AND (order_id IS NULL OR order_changed)
            UNION
            SELECT o_member_id FROM import_target WHERE o_member_id IS NOT NULL AND order_changed
            """
        )
        touched = [row[0] for row in cursor.fetchall()]
        if touched:
            refresh_member_metrics(touched, now=self.context.now)
        cursor.execute("DROP TABLE import_lines")
        return counts


# --------------------------------------------------------------------------------------------------
# Member tags


@register
class MemberTagImporter(Importer):
    """Tags added to (and, with the remove column, taken from) members found by mobile."""

    name = "member_tags"
    verbose_name = gettext_lazy("member tags")
    description = gettext_lazy(
        "One row per member, found by mobile. The tags in “Tags” are added (source: import; unknown "
        "tags are created); tags already on the member stay. The optional column “Remove tags” takes "
        "tags off the member, whoever added them, and needs the right to delete member tags. Separate "
        "tags with , ， 、 or ;."
    )
    model = MemberTag
    key_index = 1
    key_column = "mobile"
    key_label = gettext_lazy("The mobile")
    columns = (
        Column(
            "mobile", gettext_lazy("Mobile"), MOBILE_ALIASES, required=True, example="13812345678", width=16
        ),
        Column(
            "tags",
            gettext_lazy("Tags"),
            ("标签", "会员标签", "添加标签", "tag", "add tags"),
            example="护肤，敏感肌",
        ),
        Column(
            "remove",
            gettext_lazy("Remove tags"),
            ("移除标签", "删除标签", "取消标签", "remove tag"),
            example="",
            width=20,
        ),
    )
    staging = (("mobile", "text"), ("tags", "text[]"), ("remove", "text[]"))

    def bind(self, headers: Any) -> None:
        super().bind(headers)
        if "tags" not in self.index and "remove" not in self.index:
            raise FileRefused(
                _("The header row needs a column “%(add)s” or “%(remove)s”.")
                % {"add": _("Tags"), "remove": _("Remove tags")},
                code="wrong_headers",
            )
        user = self.context.actor.user
        if "remove" in self.index and user is not None and not user.has_perm("members.delete_membertag"):
            raise ImportNotAllowed(_("You may not remove member tags: the file has a “Remove tags” column."))

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []
        mobile = _mobile(self, cells, problems)
        tags = self.clean_cell(cells, "tags", split_tags, problems) or []
        remove = self.clean_cell(cells, "remove", split_tags, problems) or []
        both = [tag for tag in tags if tag in remove]
        if both:
            problems.append(("remove", _("The tag “%(tag)s” is both added and removed.") % {"tag": both[0]}))
        elif not tags and not remove and not problems:
            problems.append(("tags", _("Enter at least one tag.")))
        if problems:
            raise RowInvalid(problems)
        return (row_no, mobile, pg_text_array(tags), pg_text_array(remove))

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        return _member_problems(cursor)

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        return {
            "mobile": staged.get("mobile"),
            "tags": staged.get("tags") or "",
            "remove": staged.get("remove") or "",
        }

    def _build_target(self, cursor: Any) -> dict[str, int]:
        cursor.execute(
            """
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT s.row_no, m.id AS member_id, s.tags, s.remove,
                   EXISTS (SELECT 1 FROM unnest(s.tags) AS n(name)
                            WHERE NOT EXISTS (
                                SELECT 1 FROM members_membertag mt JOIN members_tag tg ON tg.id = mt.tag_id
                                 WHERE mt.member_id = m.id AND tg.name = n.name))
                   OR EXISTS (SELECT 1 FROM members_membertag mt JOIN members_tag tg ON tg.id = mt.tag_id
                               WHERE mt.member_id = m.id AND tg.name = ANY(s.remove)) AS changed
              FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
            """
        )
        return target_counts(cursor, updated="changed", unchanged="NOT changed")

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor)
        params = {"user": self.context.user_id, "now": self.context.now}
        cursor.execute(
            """
            INSERT INTO members_tag (name, "group", description)
            SELECT DISTINCT n.name, '', '' FROM import_target t, unnest(t.tags) AS n(name) WHERE t.changed
            ON CONFLICT (name) DO NOTHING
            """
        )
        cursor.execute(
            f"""
            INSERT INTO members_membertag (member_id, tag_id, source, added_by_id, added_at)
            SELECT t.member_id, tg.id, '{MemberTag.Source.IMPORT}', %(user)s, %(now)s
              FROM import_target t
              CROSS JOIN unnest(t.tags) AS n(name)
              JOIN members_tag tg ON tg.name = n.name
             WHERE t.changed
            ON CONFLICT (member_id, tag_id) DO NOTHING
            """,
            params,
        )
        cursor.execute(
            """
            DELETE FROM members_membertag mt USING import_target t, members_tag tg
             WHERE t.changed AND mt.member_id = t.member_id AND tg.id = mt.tag_id AND tg.name = ANY(t.remove)
            """
        )
        return counts


# --------------------------------------------------------------------------------------------------
# Points adjustments

# Points imports take turns (a transaction-level advisory lock): two files naming the same reference
# can never both credit it. The key is "PNTS" in ASCII.
POINTS_IMPORT_LOCK = 0x504E5453


@register
class PointsAdjustmentImporter(Importer):
    """Points adjustments by reference: each reference is credited once, whatever the file."""

    name = "points"
    verbose_name = gettext_lazy("points adjustments")
    description = gettext_lazy(
        "One row per adjustment: the member's mobile, the points (negative to deduct), the reason and "
        "a reference unique to the adjustment. A reference already in the points ledger is never "
        "credited again, so the same file imported twice changes nothing. A deduction that would take "
        "the balance below zero is refused."
    )
    model = PointsEntry
    key_index = 2  # the reference
    key_column = "ref"
    key_label = gettext_lazy("The reference")
    columns = (
        Column(
            "mobile", gettext_lazy("Mobile"), MOBILE_ALIASES, required=True, example="13812345678", width=16
        ),
        Column(
            "delta",
            gettext_lazy("Points"),
            ("积分", "调整积分", "积分变动", "积分调整", "points", "delta"),
            required=True,
            example=200,
            width=10,
        ),
        Column(
            "reason",
            gettext_lazy("Reason"),
            ("原因", "调整原因", "备注", "reason"),
            example="客诉补偿",
            width=24,
        ),
        Column(
            "ref",
            gettext_lazy("Reference"),
            ("参考号", "业务单号", "流水号", "调整单号", "reference", "ref"),
            required=True,
            example="ADJ-2024-0001",
            width=18,
        ),
    )
    staging = (("mobile", "text"), ("ref", "text"), ("delta", "integer"), ("reason", "text"))

    @classmethod
    def required_permissions(cls) -> tuple[str, ...]:
        return ("members.add_pointsentry",)  # the ledger is append-only: nothing to change

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []
        mobile = _mobile(self, cells, problems)
        delta = self.clean_cell(cells, "delta", clean_int, problems, missing=ENTER_POINTS)
        if delta == 0:
            problems.append(("delta", _("A points movement cannot be zero.")))
        elif delta is not None and abs(delta) > 10_000_000:
            problems.append(("delta", _("At most 10,000,000 points in one adjustment.")))
        reason = self.clean_cell(cells, "reason", clean_text, problems, max_length=200)
        ref = self.clean_cell(cells, "ref", clean_text, problems, missing=ENTER_REF, max_length=64)
        if problems:
            raise RowInvalid(problems)
        return (row_no, mobile, ref, delta, reason or "")

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        if not self.context.dry_run:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [POINTS_IMPORT_LOCK])
        problems = _member_problems(cursor)
        # A reference already used by another adjustment (another member or other points) is refused.
        cursor.execute(
            f"""
            SELECT s.row_no, s.ref FROM import_staging s
              JOIN members_member m ON m.mobile = s.mobile
             WHERE EXISTS (SELECT 1 FROM members_pointsentry p
                            WHERE p.ref = s.ref AND p.kind = '{PointsEntry.Kind.ADJUST}'
                              AND (p.member_id, p.delta) IS DISTINCT FROM (m.id, s.delta))
            """
        )
        problems += [
            (row, "ref", _("The reference “%(ref)s” was already used for another adjustment.") % {"ref": ref})
            for row, ref in cursor.fetchall()
        ]
        refused = {row for row, _key, _reason in problems}
        # The balance never goes below zero: rows are applied per member in file order, and a row that
        # would overdraw is refused (the next rows count without it). Members are locked when writing.
        lock = "" if self.context.dry_run else "FOR UPDATE OF m"
        cursor.execute(
            f"""
            SELECT s.row_no, s.delta, m.id, m.points_balance FROM import_staging s
              JOIN members_member m ON m.mobile = s.mobile
             WHERE NOT EXISTS (SELECT 1 FROM members_pointsentry p
                                WHERE p.ref = s.ref AND p.kind = '{PointsEntry.Kind.ADJUST}')
             ORDER BY m.id, s.row_no
             {lock}
            """
        )
        balances: dict[int, int] = {}
        for row, delta, member_id, balance in cursor.fetchall():
            if row in refused:
                continue
            current = balances.setdefault(member_id, balance)
            if current + delta < 0:
                problems.append(
                    (
                        row,
                        "delta",
                        _("Not enough points: the balance is %(balance)d, the row deducts %(points)d.")
                        % {"balance": current, "points": -delta},
                    )
                )
            else:
                balances[member_id] = current + delta
        return problems

    def _build_target(self, cursor: Any) -> dict[str, int]:
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT s.row_no, m.id AS member_id, s.ref, s.delta, s.reason,
                   EXISTS (SELECT 1 FROM members_pointsentry p
                            WHERE p.ref = s.ref AND p.kind = '{PointsEntry.Kind.ADJUST}') AS known
              FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
            """
        )
        return target_counts(cursor, new="NOT known", unchanged="known")

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor)
        listed = ("member_id", "delta", "kind", "reason", "ref", "expires_at", "created_at", "actor_id")
        more_columns, more_values, more_params = insert_defaults(PointsEntry, listed)
        # In file order, so the ledger reads like the file; the trigger moves each balance.
        cursor.execute(
            f"""
            INSERT INTO members_pointsentry (member_id, delta, kind, reason, ref, expires_at, created_at,
                                             actor_id{more_columns})
            SELECT member_id, delta, '{PointsEntry.Kind.ADJUST}', reason, ref, NULL, %(now)s,
                   %(user)s{more_values}
              FROM import_target WHERE NOT known ORDER BY row_no
            """,
            {"now": self.context.now, "user": self.context.user_id, **more_params},
        )
        return counts


# --------------------------------------------------------------------------------------------------
# Consent events

CONTACT_ALIASES = {
    ContactChannel.SMS: ("短信", "sms"),
    ContactChannel.CALL: ("电话", "电话外呼", "call", "phone call"),
    ContactChannel.WECOM: ("企业微信", "企微", "wecom"),
    ContactChannel.EMAIL: ("邮件", "电子邮件", "email", "e-mail"),
}
PURPOSE_ALIASES = {
    ConsentRecord.Purpose.MARKETING: ("营销", "营销推广", "marketing"),
    ConsentRecord.Purpose.PERSONALISATION: ("个性化推荐", "个性化", "personalisation", "personalization"),
    ConsentRecord.Purpose.SERVICE: ("服务通知", "服务", "service"),
}
ACTION_ALIASES = {
    ConsentRecord.Action.GRANT: ("同意", "授权", "grant", "granted", "opt in"),
    ConsentRecord.Action.WITHDRAW: ("撤回", "撤销", "取消授权", "退订", "withdraw", "withdrawn", "opt out"),
    ConsentRecord.Action.REFUSE: ("拒绝", "不同意", "refuse", "refused"),
    ConsentRecord.Action.GUARDIAN_GRANT: ("监护人同意", "监护人授权", "guardian grant"),
}
SOURCE_ALIASES = {
    ConsentRecord.Source.IMPORT: ("导入", "import"),
    ConsentRecord.Source.STORE_POS: ("门店POS", "门店", "pos", "store pos"),
    ConsentRecord.Source.MINIPROGRAM: ("小程序", "mini-program", "miniprogram"),
    ConsentRecord.Source.GUIDE: ("导购页面", "导购", "guide"),
    ConsentRecord.Source.HQ_ADMIN: ("总部后台", "总部", "hq"),
    ConsentRecord.Source.API: ("接口", "api"),
}
METHOD_ALIASES = {
    ConsentRecord.Method.CHECKBOX: ("勾选", "checkbox"),
    ConsentRecord.Method.SMS_REPLY: ("短信回复", "sms reply"),
    ConsentRecord.Method.VERBAL: ("口头", "verbal"),
    ConsentRecord.Method.PAPER: ("纸质表单", "纸质", "paper"),
}


@register
class ConsentEventImporter(Importer):
    """Consent evidence into the append-only ledger; the members' flags are projected from it."""

    name = "consent"
    verbose_name = gettext_lazy("consent events")
    description = gettext_lazy(
        "One row per consent event of a member found by mobile: channel, purpose, action (grant, "
        "withdraw, refuse, guardian grant), source, method, privacy notice version (empty: the version "
        "published at that time), time and evidence. Events are added to the consent ledger with the "
        "same rules as the admin (a grant needs a notice version asking for the purpose, members under "
        "14 need a guardian's grant); the members' consent flags follow, and withdrawals stop what was "
        "planned for the member. An event already in the ledger is not added again."
    )
    model = ConsentRecord
    key_index = 7  # member, channel, purpose and time
    key_column = "at"
    key_label = gettext_lazy("This consent event")
    columns = (
        Column(
            "mobile", gettext_lazy("Mobile"), MOBILE_ALIASES, required=True, example="13812345678", width=16
        ),
        Column(
            "channel",
            gettext_lazy("Contact channel"),
            ("渠道", "触达渠道", "联系渠道", "channel"),
            required=True,
            example="短信",
            choices=lambda: alias_options(CONTACT_ALIASES),
            width=10,
        ),
        Column(
            "purpose",
            gettext_lazy("Purpose"),
            ("用途", "目的", "授权用途", "purpose"),
            example="营销",
            choices=lambda: alias_options(PURPOSE_ALIASES),
            width=12,
        ),
        Column(
            "action",
            gettext_lazy("Action"),
            ("操作", "授权状态", "动作", "action"),
            required=True,
            example="同意",
            choices=lambda: alias_options(ACTION_ALIASES),
            width=12,
        ),
        Column(
            "source",
            gettext_lazy("Source"),
            ("来源", "source"),
            example="门店POS",
            choices=lambda: alias_options(SOURCE_ALIASES),
            width=12,
        ),
        Column(
            "method",
            gettext_lazy("Method"),
            ("方式", "授权方式", "method"),
            example="纸质表单",
            choices=lambda: alias_options(METHOD_ALIASES),
            width=10,
        ),
        Column(
            "version",
            gettext_lazy("Privacy notice version"),
            ("隐私政策版本", "隐私声明版本", "政策版本", "notice version", "policy version"),
            example="",
        ),
        Column(
            "at",
            gettext_lazy("Time"),
            ("时间", "授权时间", "操作时间", "time", "at"),
            required=True,
            example=datetime.datetime(2024, 5, 6, 14, 30),
            width=17,
        ),
        Column(
            "evidence",
            gettext_lazy("Evidence"),
            ("凭证", "证据", "凭证编号", "evidence"),
            example="纸质表单编号 F-0001",
            width=24,
        ),
    )
    staging = (
        ("mobile", "text"),
        ("channel", "text"),
        ("purpose", "text"),
        ("action", "text"),
        ("source", "text"),
        ("method", "text"),
        ("key", "text"),
        ("version", "text"),
        ("at", "timestamptz"),
        ("evidence", "text"),
    )

    @classmethod
    def required_permissions(cls) -> tuple[str, ...]:
        return ("members.add_consentrecord",)  # the ledger is append-only: nothing to change

    def prepare(self, cursor: Any) -> None:
        cursor.execute(
            "SELECT version, purposes, published_at FROM members_privacynotice ORDER BY published_at"
        )
        self.notices = [(version, frozenset(purposes), at) for version, purposes, at in cursor.fetchall()]
        self.notice_purposes = {version: purposes for version, purposes, _at in self.notices}
        self.choices = {
            key: (alias_choices(aliases), alias_expected(aliases))
            for key, aliases in (
                ("channel", CONTACT_ALIASES),
                ("purpose", PURPOSE_ALIASES),
                ("action", ACTION_ALIASES),
                ("source", SOURCE_ALIASES),
                ("method", METHOD_ALIASES),
            )
        }

    def _notice_at(self, at: datetime.datetime) -> str | None:
        version = None
        for name, _purposes, published_at in self.notices:
            if published_at <= at:
                version = name
        return version

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []
        mobile = _mobile(self, cells, problems)
        values: dict[str, str | None] = {}
        for key in ("channel", "purpose", "action", "source", "method"):
            choices, expected = self.choices[key]
            values[key] = self.clean_cell(
                cells,
                key,
                clean_choice,
                problems,
                missing=ENTER_CONTACT_CHANNEL
                if key == "channel"
                else ENTER_ACTION
                if key == "action"
                else None,
                choices=choices,
                expected=expected,
            )
        purpose = values["purpose"] or ConsentRecord.Purpose.MARKETING
        source = values["source"] or ConsentRecord.Source.IMPORT
        method = values["method"] or ConsentRecord.Method.CHECKBOX
        at = self.clean_cell(cells, "at", clean_datetime, problems, missing=ENTER_TIME)
        version = self.clean_cell(cells, "version", clean_text, problems, max_length=32)
        evidence = self.clean_cell(cells, "evidence", clean_text, problems, max_length=500)
        action = values["action"]
        if at is not None and action is not None:
            if version is None:
                version = self._notice_at(at)
            if version is None and action in consent.GRANTING_ACTIONS:
                problems.append(
                    ("version", _("No privacy notice was published at that time; enter the version."))
                )
            else:
                try:
                    # The ledger's own rules (future time, notice version and purpose); the age rule
                    # needs the member's birthday and is checked against the database (late_problems).
                    consent.check_consent_event(
                        action=action,
                        purpose=purpose,
                        policy_version=version,
                        at=at,
                        birthday=None,
                        now=self.context.now,
                        notices=self.notice_purposes,
                    )
                except ValidationError as error:
                    column = "at" if error.code == "future" else "version"
                    problems.append((column, error.messages[0]))
        if problems:
            raise RowInvalid(problems)
        key = f"{mobile}\x1f{values['channel']}\x1f{purpose}\x1f{at.isoformat()}"
        return (
            row_no,
            mobile,
            values["channel"],
            purpose,
            action,
            source,
            method,
            key,
            version or "",
            at,
            evidence,
        )

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        problems = _member_problems(cursor)
        # A plain grant for a member under 14 today is refused, as by record_consent.
        cursor.execute(
            """
            SELECT s.row_no FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
             WHERE s.action = %s AND m.birthday > %s
            """,
            [ConsentRecord.Action.GRANT, consent.guardian_age_cutoff(consent.local_today(self.context.now))],
        )
        reason = _("A guardian must grant consent for members under 14.")
        problems += [(row, "action", reason) for (row,) in cursor.fetchall()]
        # The ledger is append-only: another event at the same moment cannot be replaced.
        cursor.execute(
            """
            SELECT s.row_no FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
             WHERE EXISTS (SELECT 1 FROM members_consentrecord c
                            WHERE c.member_id = m.id AND c.channel = s.channel AND c.purpose = s.purpose
                              AND c.at = s.at AND c.action <> s.action)
            """
        )
        reason = _(
            "A different consent event is already recorded for this member, channel and purpose at this time."
        )
        problems += [(row, "action", reason) for (row,) in cursor.fetchall()]
        return problems

    def _build_target(self, cursor: Any) -> dict[str, int]:
        cursor.execute(
            """
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT s.*, m.id AS member_id,
                   EXISTS (SELECT 1 FROM members_consentrecord c
                            WHERE c.member_id = m.id AND c.channel = s.channel AND c.purpose = s.purpose
                              AND c.at = s.at AND c.action = s.action) AS known
              FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
            """
        )
        return target_counts(cursor, new="NOT known", unchanged="known")

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        # Consent imports take turns: the ledger has no unique key, so two files holding the same
        # event must not both find it new.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CONSENT_IMPORT_LOCK])
        counts = self._build_target(cursor)
        actor = self.context.actor
        # The evidence as record_consent writes it (request and address of the actor), plus the file.
        cursor.execute(
            """
            INSERT INTO members_consentrecord (member_id, channel, purpose, action, source, method,
                                               policy_version, evidence, actor_id, store_id, at)
            SELECT member_id, channel, purpose, action, source, method, version,
                   jsonb_strip_nulls(jsonb_build_object('note', evidence))
                   || jsonb_build_object('request_id', %(request_id)s::text, 'ip', %(ip)s::text,
                                         'import_sha256', %(sha)s::text, 'file', %(file)s::text,
                                         'row', row_no),
                   %(user)s, NULL, at
              FROM import_target WHERE NOT known ORDER BY row_no
            RETURNING member_id, channel, action
            """,
            {
                "request_id": actor.request_id,
                "ip": actor.ip,
                "sha": self.context.sha256,
                "file": self.context.file_name,
                "user": self.context.user_id,
            },
        )
        inserted = cursor.fetchall()
        members = sorted({member_id for member_id, _channel, _action in inserted})
        if members:
            consent.project_consent(members, actor=actor)
        withdrawn = [
            (member_id, channel)
            for member_id, channel, action in inserted
            if action in consent.WITHDRAWING_ACTIONS
        ]
        if withdrawn and consent.WITHDRAWAL_HANDLERS:
            by_id = Member.objects.in_bulk({member_id for member_id, _channel in withdrawn})
            for member_id, channel in dict.fromkeys(withdrawn):
                consent.run_withdrawal_handlers(by_id[member_id], channel, actor)
        return counts


__all__ = ["ConsentEventImporter", "MemberTagImporter", "OrderImporter", "PointsAdjustmentImporter"]
