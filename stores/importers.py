"""Importers for the brand's organisation (see scrm.imports for the pipeline they plug into).

Like the member importer: rows are cleaned in Python and upserted set-based from the staging table.
An empty optional cell leaves the stored value as it is; a new store gets the model's default.
"""

from __future__ import annotations

import datetime
import unicodedata
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.importers import clean_mobile
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
    Column,
    Importer,
    RowInvalid,
    clean_choice,
    clean_code,
    clean_date,
    clean_text,
    is_empty,
    register,
)
from scrm.imports import (
    _text as cell_text,
)
from scrm.roles import Role

from .models import Guide, Store

# What people write for each store status, besides the code and the translated label.
STATUS_ALIASES = {
    Store.Status.OPEN: ("营业中", "营业", "开业", "open"),
    Store.Status.CLOSED: ("已关闭", "关闭", "闭店", "已闭店", "closed"),
}
STATUS_DISPLAY = {status: aliases[0] for status, aliases in STATUS_ALIASES.items()}


def status_choices() -> dict[str, str]:
    return alias_choices(STATUS_ALIASES)


def _status_options() -> list[str]:
    return alias_options(STATUS_ALIASES)


POSITION_ALIASES = {
    Guide.Position.GUIDE: ("导购", "导购员", "guide", "shopping guide"),
    Guide.Position.MANAGER: ("店长", "门店经理", "manager", "store manager"),
}
POSITION_DISPLAY = {position: aliases[0] for position, aliases in POSITION_ALIASES.items()}
# A guide's login gets the role group of their position.
POSITION_ROLE = {Guide.Position.GUIDE: Role.GUIDE, Guide.Position.MANAGER: Role.STORE_MANAGER}


def position_choices() -> dict[str, str]:
    return alias_choices(POSITION_ALIASES)


def _position_options() -> list[str]:
    return alias_options(POSITION_ALIASES)


def _unknown_store(code: str) -> str:
    return _("No store has the code “%(code)s”.") % {"code": code}


@register
class StoreImporter(Importer):
    """Stores by store code: create or update."""

    name = "stores"
    verbose_name = gettext_lazy("stores")
    description = gettext_lazy(
        "One row per store, found by store code: new codes are added, known ones updated. The region "
        "must exist (its code or name). Empty optional cells keep what is stored."
    )
    model = Store
    key_index = 1
    key_column = "code"
    key_label = gettext_lazy("The store code")
    columns = (
        Column(
            "code",
            gettext_lazy("Store code"),
            ("门店编码", "门店代码", "门店编号", "code", "store"),
            required=True,
            example="SH001",
            width=12,
        ),
        Column(
            "name",
            gettext_lazy("Store name"),
            ("门店名称", "门店名", "名称", "name"),
            required=True,
            example="上海静安店",
            width=18,
        ),
        Column(
            "region",
            gettext_lazy("Region"),
            ("区域", "区域编码", "大区", "region code", "region name"),
            required=True,
            example="EAST",
            width=12,
        ),
        Column("province", gettext_lazy("Province"), ("省份", "省"), example="上海市", width=10),
        Column("city", gettext_lazy("City"), ("城市", "市"), example="上海", width=10),
        Column("address", gettext_lazy("Address"), ("地址", "门店地址"), example="南京西路1266号", width=30),
        Column(
            "status",
            gettext_lazy("Status"),
            ("状态", "营业状态", "门店状态"),
            example="营业中",
            choices=_status_options,
            width=10,
        ),
        Column(
            "opened_on",
            gettext_lazy("Opened on"),
            ("开业日期", "开店日期", "开业时间", "opening date", "opened"),
            example=datetime.date(2020, 5, 1),
            width=12,
        ),
    )
    staging = (
        ("code", "text"),
        ("name", "text"),
        ("region_id", "bigint"),
        ("province", "text"),
        ("city", "text"),
        ("address", "text"),
        ("status", "text"),
        ("opened_on", "date"),
    )

    # -- lookups -------------------------------------------------------------------------------
    def prepare(self, cursor: Any) -> None:
        cursor.execute("SELECT code, name, id FROM stores_region")
        self.regions: dict[str, int] = {}
        self.region_codes: dict[int, str] = {}
        rows = cursor.fetchall()
        # Codes first, so a region named like another's code never shadows that code.
        for code, _name, pk in rows:
            self.regions[code.strip().upper()] = pk
            self.region_codes[pk] = code
        for _code, name, pk in rows:
            self.regions.setdefault(unicodedata.normalize("NFKC", name).strip().upper(), pk)
        self.statuses = status_choices()
        self.status_expected = alias_expected(STATUS_ALIASES)

    # -- rows ----------------------------------------------------------------------------------
    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        # Stores number in the thousands, not millions: no fast paths needed here.
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []
        add = problems.append

        code = self.clean_cell(cells, "code", clean_code, problems, missing=_("Enter the store code."))

        name = self.clean_cell(
            cells, "name", clean_text, problems, missing=_("Enter the store name."), max_length=100
        )

        region_id = None
        raw = self.cell(cells, "region")
        if is_empty(raw):
            add(("region", _("Enter the region code or name.")))
        else:
            typed = unicodedata.normalize("NFKC", cell_text(raw)).strip()
            region_id = self.regions.get(typed.upper())
            if region_id is None:
                add(("region", _("No region has the code or name “%(region)s”.") % {"region": typed}))

        texts = {
            key: self.clean_cell(cells, key, clean_text, problems, max_length=max_length)
            for key, max_length in (("province", 32), ("city", 32), ("address", 200))
        }
        status = self.clean_cell(
            cells, "status", clean_choice, problems, choices=self.statuses, expected=self.status_expected
        )
        opened_on = self.clean_cell(cells, "opened_on", clean_date, problems)

        if problems:
            raise RowInvalid(problems)
        return (
            row_no,
            code,
            name,
            region_id,
            texts["province"],
            texts["city"],
            texts["address"],
            status,
            opened_on,
        )

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        return {
            "code": staged.get("code"),
            "name": staged.get("name"),
            "region": self.region_codes.get(staged.get("region_id"), ""),
            "province": staged.get("province"),
            "city": staged.get("city"),
            "address": staged.get("address"),
            "status": STATUS_DISPLAY.get(staged.get("status"), ""),
            "opened_on": staged.get("opened_on"),
        }

    # -- SQL -----------------------------------------------------------------------------------
    COMPARED = ("name", "region_id", "province", "city", "address", "status", "opened_on")

    def _build_target(self, cursor: Any) -> dict[str, int]:
        """``import_target``: each staged row with the values it will have and whether anything changes."""
        old = ", ".join(f"o_{name}" for name in self.COMPARED)
        new = ", ".join(self.COMPARED)
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT t.*, t.store_id IS NOT NULL AND ({old}) IS DISTINCT FROM ({new}) AS store_changed
              FROM (
                SELECT s.row_no, s.code, e.id AS store_id,
                       s.name AS name, e.name AS o_name,
                       s.region_id AS region_id, e.region_id AS o_region_id,
                       COALESCE(s.province, e.province, '') AS province, e.province AS o_province,
                       COALESCE(s.city, e.city, '') AS city, e.city AS o_city,
                       COALESCE(s.address, e.address, '') AS address, e.address AS o_address,
                       COALESCE(s.status, e.status, %(open)s) AS status, e.status AS o_status,
                       COALESCE(s.opened_on, e.opened_on) AS opened_on, e.opened_on AS o_opened_on
                  FROM import_staging s LEFT JOIN stores_store e ON e.code = s.code
              ) t
            """,
            {"open": Store.Status.OPEN.value},
        )
        return target_counts(
            cursor,
            new="store_id IS NULL",
            updated="store_changed",
            unchanged="store_id IS NOT NULL AND NOT store_changed",
        )

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor)
        columns = ", ".join(self.COMPARED)
        excluded = ", ".join(f"EXCLUDED.{name}" for name in self.COMPARED)
        current = ", ".join(f"st.{name}" for name in self.COMPARED)
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in self.COMPARED)
        # Unchanged rows are not offered to the upsert; the WHERE guard keeps a row that became
        # equal meanwhile from being rewritten.
        cursor.execute(
            f"""
            WITH upserted AS (
                INSERT INTO stores_store AS st (code, {columns})
                SELECT code, {columns} FROM import_target WHERE store_id IS NULL OR store_changed
                ON CONFLICT (code) DO UPDATE SET {assignments}
                 WHERE ({current}) IS DISTINCT FROM ({excluded})
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted) FROM upserted
            """
        )
        counts["new"] = cursor.fetchone()[0]
        return counts


@register
class GuideImporter(Importer):
    """Store staff by employee number: create (with their login) or update."""

    name = "guides"
    verbose_name = gettext_lazy("guides")
    description = gettext_lazy(
        "One row per guide or store manager, found by employee number: new numbers are added with a "
        "login (the employee number, lower-cased, without a password), known ones updated. The store "
        "must exist. Empty optional cells keep what is stored."
    )
    model = Guide
    key_index = 1
    key_column = "employee_no"

    @classmethod
    def required_permissions(cls) -> tuple[str, ...]:
        # Importing guides creates logins and gives them a staff role: the right to manage users too,
        # so whoever may only edit guides cannot mint store-manager logins in bulk.
        return (*super().required_permissions(), "auth.add_user", "auth.change_user")

    @classmethod
    def refused_text(cls) -> str:
        return _(
            "You may not import guides: it needs permission to add and change guides and to add "
            "and change users, since it creates their logins."
        )

    key_label = gettext_lazy("The employee number")
    columns = (
        Column(
            "employee_no",
            gettext_lazy("Employee number"),
            ("工号", "员工工号", "导购工号", "员工编号", "employee no", "employee_no"),
            required=True,
            example="E00001",
            width=12,
        ),
        Column(
            "name", gettext_lazy("Full name"), ("姓名", "员工姓名", "name"), required=True, example="王芳"
        ),
        Column(
            "store",
            gettext_lazy("Store code"),
            ("门店编码", "门店代码", "门店编号", "所属门店", "store"),
            required=True,
            example="SH001",
            width=12,
        ),
        Column(
            "mobile",
            gettext_lazy("Mobile"),
            ("手机号", "手机", "手机号码", "phone"),
            example="13812345678",
            width=16,
        ),
        Column(
            "position",
            gettext_lazy("Position"),
            ("岗位", "职位", "职务"),
            example="导购",
            choices=_position_options,
            width=10,
        ),
        Column(
            "joined_on",
            gettext_lazy("Joined on"),
            ("入职日期", "入职时间", "join date", "joined"),
            example=datetime.date(2022, 3, 1),
            width=12,
        ),
    )
    staging = (
        ("employee_no", "text"),
        ("name", "text"),
        ("store_id", "bigint"),
        ("mobile", "text"),
        ("position", "text"),
        ("joined_on", "date"),
    )

    def prepare(self, cursor: Any) -> None:
        cursor.execute("SELECT code, id FROM stores_store")
        self.stores: dict[str, int] = dict(cursor.fetchall())
        self.store_codes = {pk: code for code, pk in self.stores.items()}
        self.positions = position_choices()
        self.position_expected = alias_expected(POSITION_ALIASES)

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        cells = padded_row(self, cells)
        if cells is None:
            return None
        problems: list[tuple[str, str]] = []

        number = self.clean_cell(
            cells, "employee_no", clean_code, problems, missing=_("Enter the employee number.")
        )

        name = self.clean_cell(
            cells, "name", clean_text, problems, missing=_("Enter the full name."), max_length=64
        )

        store_id = clean_lookup(
            self, cells, "store", problems, self.stores, _unknown_store, missing=_("Enter the store code.")
        )
        mobile = self.clean_cell(cells, "mobile", optional(clean_mobile), problems)
        position = self.clean_cell(
            cells, "position", clean_choice, problems, choices=self.positions, expected=self.position_expected
        )
        joined_on = self.clean_cell(cells, "joined_on", clean_date, problems)

        if problems:
            raise RowInvalid(problems)
        return (row_no, number, name, store_id, mobile, position, joined_on)

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        # A new guide's login name must be free: a login of that name not bound to this guide is refused.
        cursor.execute(
            """
            SELECT s.row_no, s.employee_no
              FROM import_staging s
              JOIN auth_user u ON u.username = lower(s.employee_no)
             WHERE NOT EXISTS (SELECT 1 FROM stores_guide g WHERE g.employee_no = s.employee_no)
            """
        )
        return [
            (
                row_no,
                "employee_no",
                _("A login named “%(username)s” already exists and is not this guide's.")
                % {"username": number.lower()},
            )
            for row_no, number in cursor.fetchall()
        ]

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        return {
            "employee_no": staged.get("employee_no"),
            "name": staged.get("name"),
            "store": self.store_codes.get(staged.get("store_id"), ""),
            "mobile": staged.get("mobile"),
            "position": POSITION_DISPLAY.get(staged.get("position"), ""),
            "joined_on": staged.get("joined_on"),
        }

    COMPARED = ("name", "store_id", "mobile", "position", "joined_on")

    def _build_target(self, cursor: Any) -> dict[str, int]:
        old = ", ".join(f"o_{name}" for name in self.COMPARED)
        new = ", ".join(self.COMPARED)
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT t.*, t.guide_id IS NOT NULL AND ({old}) IS DISTINCT FROM ({new}) AS guide_changed
              FROM (
                SELECT s.row_no, s.employee_no, e.id AS guide_id, e.user_id,
                       s.name AS name, e.name AS o_name,
                       s.store_id AS store_id, e.store_id AS o_store_id,
                       COALESCE(s.mobile, e.mobile, '') AS mobile, e.mobile AS o_mobile,
                       COALESCE(s.position, e.position, %(guide)s) AS position, e.position AS o_position,
                       COALESCE(s.joined_on, e.joined_on) AS joined_on, e.joined_on AS o_joined_on
                  FROM import_staging s LEFT JOIN stores_guide e ON e.employee_no = s.employee_no
              ) t
            """,
            {"guide": Guide.Position.GUIDE.value},
        )
        return target_counts(
            cursor,
            new="guide_id IS NULL",
            updated="guide_changed",
            unchanged="guide_id IS NOT NULL AND NOT guide_changed",
        )

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor)
        now = self.context.now
        # New guides: their login first ("!" + random: an unusable password, as Django writes it).
        cursor.execute(
            """
            INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, last_name,
                                   email, is_staff, is_active, date_joined)
            SELECT '!' || md5(random()::text || clock_timestamp()::text || t.employee_no), NULL, false,
                   lower(t.employee_no), '', '', '', false, true, %(now)s
              FROM import_target t WHERE t.guide_id IS NULL
            """,
            {"now": now},
        )
        cursor.execute(
            f"""
            INSERT INTO stores_guide (user_id, store_id, employee_no, name, mobile, position, status,
                                      joined_on, left_on)
            SELECT u.id, t.store_id, t.employee_no, t.name, t.mobile, t.position,
                   '{Guide.Status.ACTIVE}', t.joined_on, NULL
              FROM import_target t JOIN auth_user u ON u.username = lower(t.employee_no)
             WHERE t.guide_id IS NULL
            """
        )
        assignments = ", ".join(f"{name} = t.{name}" for name in self.COMPARED)
        cursor.execute(
            f"UPDATE stores_guide g SET {assignments} FROM import_target t "
            "WHERE g.id = t.guide_id AND t.guide_changed"
        )
        # Role groups follow the position: the other staff role is taken away, this one given.
        roles = {position.value: role.value for position, role in POSITION_ROLE.items()}
        cursor.execute(
            """
            DELETE FROM auth_user_groups ug
             USING import_target t, stores_guide g, auth_group gr
             WHERE g.employee_no = t.employee_no AND ug.user_id = g.user_id AND gr.id = ug.group_id
               AND gr.name = ANY(%(staff_roles)s)
               AND gr.name <> (CASE t.position WHEN %(guide)s THEN %(guide_role)s ELSE %(manager_role)s END)
               AND (t.guide_id IS NULL OR t.position IS DISTINCT FROM t.o_position)
            """,
            {
                "staff_roles": list(roles.values()),
                "guide": Guide.Position.GUIDE.value,
                "guide_role": roles[Guide.Position.GUIDE.value],
                "manager_role": roles[Guide.Position.MANAGER.value],
            },
        )
        cursor.execute(
            """
            INSERT INTO auth_user_groups (user_id, group_id)
            SELECT g.user_id, gr.id
              FROM import_target t
              JOIN stores_guide g ON g.employee_no = t.employee_no
              JOIN auth_group gr
                ON gr.name = (CASE t.position WHEN %(guide)s THEN %(guide_role)s ELSE %(manager_role)s END)
             WHERE t.guide_id IS NULL OR t.position IS DISTINCT FROM t.o_position
            ON CONFLICT (user_id, group_id) DO NOTHING
            """,
            {
                "guide": Guide.Position.GUIDE.value,
                "guide_role": roles[Guide.Position.GUIDE.value],
                "manager_role": roles[Guide.Position.MANAGER.value],
            },
        )
        return counts
