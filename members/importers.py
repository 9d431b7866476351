"""Importers for members and what hangs on them (see scrm.imports for the pipeline they plug into).

Each importer cleans rows in Python (fast paths for the common cases, the full parser otherwise) and
upserts set-based from the staging table. An empty optional cell leaves the stored value as it is;
a new member gets the model's default.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from scrm.excel import FileRefused
from scrm.imports import (
    CellError,
    Column,
    Importer,
    RowInvalid,
    clean_choice,
    clean_code,
    clean_date,
    clean_datetime,
    clean_text,
    clean_yes_no,
    insert_defaults,
    is_empty,
    lock_references,
    register,
    split_tags,
)
from scrm.imports import (
    _text as cell_text,
)

from .models import Channel, ConsentRecord, GuideAssignment, Member, MemberTag
from .phones import normalize_mobile

# --------------------------------------------------------------------------------------------------
# Values


_PREFIX_VALID: dict[str, bool] = {}
# Mainland mobile ranges are allotted by their first five digits (the numbering plan in
# phonenumbers' metadata: 1(?:[38]\d|4[57]|…)\d{8}, 1740[0-5]\d{6}, …), so validity is cached per
# prefix; tests/members/test_import_members.py checks every prefix against normalize_mobile.
_PREFIX_LENGTH = 5


def clean_mobile(value: Any) -> str:
    """``normalize_mobile`` with a fast path for the common 11-digit mainland form."""
    if type(value) is str:
        text = value.strip()
        if len(text) != 11:
            # 138 1234 5678, 138-1234-5678, +86 138…, 86138…: separators and the country code off.
            text = text.replace(" ", "").replace("-", "")
            if text.startswith("+86"):
                text = text[3:]
            elif len(text) == 13 and text.startswith("86"):
                text = text[2:]
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = cell_text(value)
    if len(text) == 11 and text[0] == "1" and text.isascii() and text.isdigit():
        prefix = text[:_PREFIX_LENGTH]
        valid = _PREFIX_VALID.get(prefix)
        if valid is None:
            try:
                normalize_mobile(text)
                valid = True
            except ValidationError:
                valid = False
            _PREFIX_VALID[prefix] = valid
        if valid:
            return "+86" + text
    try:
        return normalize_mobile(text)
    except ValidationError as error:
        raise CellError(error.messages[0]) from None


GENDERS = {
    "男": Member.Gender.MALE,
    "女": Member.Gender.FEMALE,
    "m": Member.Gender.MALE,
    "f": Member.Gender.FEMALE,
    "male": Member.Gender.MALE,
    "female": Member.Gender.FEMALE,
    "男性": Member.Gender.MALE,
    "女性": Member.Gender.FEMALE,
    "未知": Member.Gender.UNKNOWN,
    "u": Member.Gender.UNKNOWN,
    "unknown": Member.Gender.UNKNOWN,
}
GENDER_DISPLAY = {Member.Gender.MALE: "男", Member.Gender.FEMALE: "女", Member.Gender.UNKNOWN: "未知"}

# What people write for each join channel, besides the code and the translated label.
CHANNEL_ALIASES = {
    Channel.STORE: ("门店", "线下门店", "门店pos", "pos", "store"),
    Channel.TMALL: ("天猫", "天猫旗舰店", "tmall"),
    Channel.JD: ("京东", "jd", "jd.com"),
    Channel.MINIPROGRAM: ("小程序", "小程序商城", "微信小程序", "mini-program", "miniprogram"),
    Channel.DOUYIN: ("抖音", "抖店", "douyin"),
    Channel.WECOM: ("企业微信", "企微", "wecom"),
}


YES_NO_FAST = {"是": True, "否": False, "Y": True, "N": False, "yes": True, "no": False}


def pg_text_array(items: list[str]) -> str:
    """A PostgreSQL text[] literal (COPY parses it as the column's type): every element quoted."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def channel_choices() -> dict[str, str]:
    choices: dict[str, str] = {}
    for channel, aliases in CHANNEL_ALIASES.items():
        for alias in (*aliases, channel.value, str(channel.label)):
            choices[alias.lower()] = channel.value
    return choices


def _channel_options() -> list[str]:
    return [aliases[0] for aliases in CHANNEL_ALIASES.values()]


def _yes_no_options() -> list[str]:
    return ["是", "否"]


def _gender_options() -> list[str]:
    return ["女", "男"]


def fourteenth_birthday_cutoff(today: datetime.date) -> datetime.date:
    """Born after this day means under 14 today (29 February counts as 28 February)."""
    try:
        return today.replace(year=today.year - 14)
    except ValueError:
        return today.replace(year=today.year - 14, day=28)


# --------------------------------------------------------------------------------------------------
# Members


@register
class MemberImporter(Importer):
    """Members by mobile: create or update, tags added, consent recorded, guide history kept."""

    name = "members"
    verbose_name = gettext_lazy("members")
    description = gettext_lazy(
        "One row per member, found by mobile: new mobiles are added, known ones updated. Empty cells "
        "keep what is stored. Tags are added (never removed). Points cannot be imported here: use "
        "points adjustments."
    )
    model = Member
    key_index = 1
    key_column = "mobile"
    key_label = gettext_lazy("The mobile")
    checks_references = True  # write() locks stores, guides, tiers, tags, members and the user
    written_tables = (
        "members_member",
        "members_tag",
        "members_membertag",
        "members_consentrecord",
        "members_guideassignment",
    )
    # New members are written with 0 points; the points columns are never updated here.
    skippable_triggers = ("members_points_balance_insert_guard", "members_points_balance_guard")
    columns = (
        Column(
            "mobile",
            gettext_lazy("Mobile"),
            ("手机号", "手机", "手机号码", "会员手机号", "phone", "mobile number", "mobile phone"),
            required=True,
            example="13812345678",
            width=16,
        ),
        Column("name", gettext_lazy("Name"), ("姓名", "会员姓名", "full name"), example="林晓"),
        Column(
            "gender", gettext_lazy("Gender"), ("性别", "sex"), example="女", choices=_gender_options, width=8
        ),
        Column(
            "birthday",
            gettext_lazy("Birthday"),
            ("生日", "出生日期", "date of birth", "dob"),
            example=datetime.date(1990, 1, 2),
            width=12,
        ),
        Column(
            "store",
            gettext_lazy("Store code"),
            ("门店编码", "门店代码", "门店编号", "所属门店", "store", "home store", "home store code"),
            required=True,
            example="SH001",
            width=12,
        ),
        Column(
            "guide",
            gettext_lazy("Guide employee number"),
            (
                "导购工号",
                "导购编号",
                "专属导购工号",
                "专属导购",
                "guide",
                "guide employee no",
                "employee number",
            ),
            example="E00001",
        ),
        Column("tier", gettext_lazy("Tier code"), ("会员等级", "等级", "等级编码", "tier"), example="gold"),
        Column(
            "tags",
            gettext_lazy("Tags"),
            ("标签", "会员标签", "tag"),
            example="护肤，敏感肌",
            width=24,
        ),
        Column(
            "consent_sms",
            gettext_lazy("SMS consent"),
            ("短信授权", "短信营销授权", "短信", "sms"),
            example="是",
            choices=_yes_no_options,
            width=10,
        ),
        Column(
            "consent_wecom",
            gettext_lazy("WeCom consent"),
            ("企业微信授权", "企微授权", "企业微信", "wecom"),
            example="是",
            choices=_yes_no_options,
            width=12,
        ),
        Column(
            "joined_at",
            gettext_lazy("Joined at"),
            ("入会时间", "入会日期", "注册时间", "join date", "joined"),
            example=lambda: timezone.localtime().replace(second=0, microsecond=0, tzinfo=None),
            width=17,
        ),
        Column(
            "join_channel",
            gettext_lazy("Join channel"),
            ("入会渠道", "渠道", "channel"),
            example="门店",
            choices=_channel_options,
            width=12,
        ),
    )
    staging = (
        ("mobile", "text"),
        ("name", "text"),
        ("gender", "text"),
        ("birthday", "date"),
        ("store_id", "bigint"),
        ("guide_id", "bigint"),
        ("tier_id", "bigint"),
        ("tags", "text[]"),
        ("consent_sms", "boolean"),
        ("consent_wecom", "boolean"),
        ("joined_at", "timestamp"),  # wall-clock time in the brand's zone; converted in SQL
        ("join_channel", "text"),
    )

    # -- lookups -------------------------------------------------------------------------------
    def prepare(self, cursor: Any) -> None:
        cursor.execute("SELECT code, id FROM stores_store")
        self.stores: dict[str, int] = dict(cursor.fetchall())
        cursor.execute("SELECT employee_no, id, store_id, status FROM stores_guide")
        self.guides: dict[str, tuple[int, int, str]] = {
            no.strip().upper(): (pk, store, status) for no, pk, store, status in cursor.fetchall()
        }
        cursor.execute("SELECT code, name, id FROM members_tier")
        self.tiers: dict[str, int] = {}
        self.tier_codes: dict[int, str] = {}
        for code, name, pk in cursor.fetchall():
            self.tiers[code.strip().lower()] = pk
            self.tiers.setdefault(name.strip().lower(), pk)
            self.tier_codes[pk] = code
        cursor.execute(
            "SELECT version, purposes FROM members_privacynotice WHERE published_at <= %s "
            "ORDER BY published_at DESC LIMIT 1",
            [self.context.now],
        )
        notice = cursor.fetchone()
        self.notice_version = notice[0] if notice and ConsentRecord.Purpose.MARKETING in notice[1] else None
        self.cutoff = fourteenth_birthday_cutoff(timezone.localdate(self.context.now))
        self.today = timezone.localdate(self.context.now)
        self.tz = timezone.get_current_timezone()
        self.latest_join = timezone.localtime(self.context.now, self.tz).replace(tzinfo=None)
        self.latest_join += datetime.timedelta(days=1)
        self.channels = channel_choices()
        self.tag_cache: dict[str, str] = {}
        self.channel_expected = " / ".join(_channel_options())

    def bind(self, headers: Any) -> None:
        super().bind(headers)
        # Positions as attributes (-1: no such column): clean_row runs a million times.
        for column in self.columns:
            setattr(self, f"at_{column.key}", self.index.get(column.key, -1))

    # -- rows ----------------------------------------------------------------------------------
    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...] | None:
        # Runs once per row (a million times for a big file): each column has a fast path for the
        # common clean value (exact dictionary hit, a date cell) and falls back to the full cleaner.
        cells = self.padded(cells)
        problems: list[tuple[str, str]] = []
        add = problems.append

        raw = cells[self.at_mobile]
        mobile = None
        if raw == "" or raw is None or (type(raw) is str and not raw.strip()):
            if all(is_empty(v) for v in cells):
                return None
            add(("mobile", _("Enter a mobile number.")))
        else:
            try:
                mobile = clean_mobile(raw)
            except CellError as error:
                add(("mobile", error.message))

        p = self.at_name
        name = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            name = v.strip() if type(v) is str else None
            if not name or len(name) > 64:
                try:
                    name = clean_text(v, max_length=64)
                except CellError as error:
                    add(("name", error.message))

        p = self.at_gender
        gender = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            gender = GENDERS.get(v) if type(v) is str else None
            if gender is None:
                try:
                    gender = clean_choice(v, GENDERS, expected="男 / 女 / M / F")
                except CellError as error:
                    add(("gender", error.message))

        p = self.at_birthday
        birthday = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            if type(v) is datetime.date:
                birthday = v
            else:
                try:
                    birthday = clean_date(v)
                except CellError as error:
                    add(("birthday", error.message))
            if birthday is not None and birthday > self.today:
                add(("birthday", _("The birthday is in the future.")))

        store_id = None
        v = cells[self.at_store]
        store_id = self.stores.get(v) if type(v) is str else None
        if store_id is None:
            try:
                code = clean_code(v)
            except CellError as error:
                add(("store", error.message))
            else:
                if code is None:
                    add(("store", _("Enter the store code.")))
                else:
                    store_id = self.stores.get(code)
                    if store_id is None:
                        add(("store", _("No store has the code “%(code)s”.") % {"code": code}))

        p = self.at_guide
        guide_id = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            guide = self.guides.get(v) if type(v) is str else None
            number = v
            if guide is None:
                try:
                    number = clean_code(v)
                except CellError as error:
                    add(("guide", error.message))
                    number = None
                guide = self.guides.get(number) if number else None
            if number is None:
                pass
            elif guide is None:
                add(("guide", _("No guide has the employee number “%(no)s”.") % {"no": number}))
            elif guide[2] != "active":
                add(("guide", _("The guide “%(no)s” has left and cannot take members.") % {"no": number}))
            elif store_id is not None and guide[1] != store_id:
                add(("guide", _("The guide “%(no)s” does not work in this store.") % {"no": number}))
            else:
                guide_id = guide[0]

        p = self.at_tier
        tier_id = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            tier_id = self.tiers.get(v) if type(v) is str else None
            if tier_id is None:
                tier_id = self.tiers.get(cell_text(v).strip().lower())
                if tier_id is None and not is_empty(v):
                    add(("tier", _("No tier has the code or name “%(tier)s”.") % {"tier": cell_text(v)}))

        p = self.at_tags
        tags = "{}"
        v = cells[p] if p >= 0 else ""
        if v != "":
            # The same few tag lists repeat down a file: each is split once.
            tags = self.tag_cache.get(v) if type(v) is str else None
            if tags is None:
                try:
                    tags = pg_text_array(split_tags(v))
                except CellError as error:
                    add(("tags", error.message))
                    tags = "{}"
                else:
                    if type(v) is str and len(self.tag_cache) < 10_000:
                        self.tag_cache[v] = tags

        sms = wecom = None
        for key, p in (("consent_sms", self.at_consent_sms), ("consent_wecom", self.at_consent_wecom)):
            v = cells[p] if p >= 0 else ""
            if v == "":
                continue
            granted = YES_NO_FAST.get(v) if type(v) is str else None
            if granted is None:
                try:
                    granted = clean_yes_no(v)
                except CellError as error:
                    add((key, error.message))
                    continue
            if granted:
                if self.notice_version is None:
                    add((key, _("No privacy notice asking for marketing consent is published yet.")))
                elif birthday is not None and birthday > self.cutoff:
                    add((key, _("Members under 14 need a guardian's consent; it cannot be imported.")))
            if key == "consent_sms":
                sms = granted
            else:
                wecom = granted

        p = self.at_joined_at
        joined_at = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            if type(v) is datetime.datetime:
                joined_at = v
            else:
                try:
                    joined_at = clean_datetime(v)
                except CellError as error:
                    add(("joined_at", error.message))
                else:
                    joined_at = timezone.localtime(joined_at, self.tz).replace(tzinfo=None)
            if joined_at is not None and joined_at > self.latest_join:
                add(("joined_at", _("The join date is in the future.")))

        p = self.at_join_channel
        channel = None
        v = cells[p] if p >= 0 else ""
        if v != "":
            channel = self.channels.get(v) if type(v) is str else None
            if channel is None:
                try:
                    channel = clean_choice(v, self.channels, expected=self.channel_expected)
                except CellError as error:
                    add(("join_channel", error.message))

        if problems:
            raise RowInvalid(problems)
        return (
            row_no,
            mobile,
            name,
            gender,
            birthday,
            store_id,
            guide_id,
            tier_id,
            tags,
            sms,
            wecom,
            joined_at,
            channel,
        )

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        # Consent for a member under 14 by the birthday already on file (the row left it empty).
        cursor.execute(
            """
            SELECT s.row_no, s.consent_sms IS TRUE
              FROM import_staging s JOIN members_member m ON m.mobile = s.mobile
             WHERE s.birthday IS NULL AND m.birthday > %s AND (s.consent_sms OR s.consent_wecom)
            """,
            [self.cutoff],
        )
        reason = _("Members under 14 need a guardian's consent; it cannot be imported.")
        return [(row, "consent_sms" if sms else "consent_wecom", reason) for row, sms in cursor.fetchall()]

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        if not hasattr(self, "store_codes"):
            self.store_codes = {pk: code for code, pk in self.stores.items()}
            self.guide_numbers = {pk: no for no, (pk, _store, _status) in self.guides.items()}
        store_codes, guide_numbers = self.store_codes, self.guide_numbers
        yes_no = {True: "是", False: "否", None: ""}
        return {
            "mobile": staged.get("mobile"),
            "name": staged.get("name"),
            "gender": GENDER_DISPLAY.get(staged.get("gender"), ""),
            "birthday": staged.get("birthday"),
            "store": store_codes.get(staged.get("store_id"), ""),
            "guide": guide_numbers.get(staged.get("guide_id"), ""),
            "tier": self.tier_codes.get(staged.get("tier_id"), ""),
            "tags": staged.get("tags") or "",
            "consent_sms": yes_no[staged.get("consent_sms")],
            "consent_wecom": yes_no[staged.get("consent_wecom")],
            "joined_at": staged.get("joined_at"),
            "join_channel": staged.get("join_channel"),
        }

    # -- SQL -----------------------------------------------------------------------------------
    # Compared and written: the member's own columns (consent flags included, projected from the ledger).
    COMPARED = (
        "name",
        "gender",
        "birthday",
        "home_store_id",
        "guide_id",
        "tier_id",
        "joined_at",
        "join_channel",
        "consent_sms",
        "consent_wecom",
    )

    def _build_target(self, cursor: Any, *, assign_ids: bool = False) -> dict[str, int]:
        """``import_target``: each staged row with the values it will have and whether anything changes.

        In mobile order, so the member indexes (two on the mobile) are filled in order, not at random:
        about a third faster. ``id`` is the member's id: the existing one, or (``assign_ids``) one
        drawn from the sequence now, so the rows that hang on a new member need no lookup after the
        upsert.
        """
        old = ", ".join(f"o_{name}" for name in self.COMPARED)
        new = ", ".join(self.COMPARED)
        new_id = "NULL::bigint"
        if assign_ids:
            cursor.execute("SELECT pg_get_serial_sequence('members_member', 'id')::regclass::oid")
            new_id = f"nextval({cursor.fetchone()[0]}::regclass)"
        cursor.execute(
            f"""
            CREATE TEMP TABLE import_target ON COMMIT DROP AS
            SELECT t.*, COALESCE(t.member_id, {new_id}) AS id,
                   t.member_id IS NOT NULL AND ({old}) IS DISTINCT FROM ({new}) AS member_changed,
                   t.member_id IS NOT NULL AND cardinality(t.tags) > 0 AND EXISTS (
                       SELECT 1 FROM unnest(t.tags) AS n(name)
                        WHERE NOT EXISTS (
                            SELECT 1 FROM members_membertag mt JOIN members_tag tg ON tg.id = mt.tag_id
                             WHERE mt.member_id = t.member_id AND tg.name = n.name)
                   ) AS tags_changed
              FROM (
                SELECT s.row_no, s.mobile, e.id AS member_id, s.tags,
                       COALESCE(s.name, e.name, '') AS name, e.name AS o_name,
                       COALESCE(s.gender, e.gender, 'U') AS gender, e.gender AS o_gender,
                       COALESCE(s.birthday, e.birthday) AS birthday, e.birthday AS o_birthday,
                       s.store_id AS home_store_id, e.home_store_id AS o_home_store_id,
                       -- a new home store without a guide in the row unbinds the old store's guide
                       CASE WHEN s.guide_id IS NOT NULL THEN s.guide_id
                            WHEN e.home_store_id = s.store_id THEN e.guide_id END AS guide_id,
                       e.guide_id AS o_guide_id,
                       COALESCE(s.tier_id, e.tier_id) AS tier_id, e.tier_id AS o_tier_id,
                       COALESCE(s.joined_at AT TIME ZONE %(zone)s, e.joined_at, %(now)s) AS joined_at,
                       e.joined_at AS o_joined_at,
                       COALESCE(s.join_channel, e.join_channel, 'store') AS join_channel,
                       e.join_channel AS o_join_channel,
                       COALESCE(s.consent_sms, e.consent_sms, false) AS consent_sms,
                       e.consent_sms AS o_consent_sms,
                       COALESCE(s.consent_wecom, e.consent_wecom, false) AS consent_wecom,
                       e.consent_wecom AS o_consent_wecom
                  FROM import_staging s LEFT JOIN members_member e ON e.mobile = s.mobile
                 ORDER BY s.mobile
              ) t
            """,
            {"now": self.context.now, "zone": str(self.tz)},
        )
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE member_id IS NULL),
                   count(*) FILTER (WHERE member_changed OR tags_changed),
                   count(*) FILTER (WHERE member_id IS NOT NULL AND NOT member_changed AND NOT tags_changed)
              FROM import_target
            """
        )
        new, updated, unchanged = cursor.fetchone()
        return {"new": new, "updated": updated, "unchanged": unchanged}

    def classify(self, cursor: Any) -> dict[str, int]:
        return self._build_target(cursor)

    def write(self, cursor: Any) -> dict[str, int]:
        counts = self._build_target(cursor, assign_ids=True)
        params = {
            "now": self.context.now,
            "user": self.context.user_id,
            "version": self.notice_version or "",
            "sha": self.context.sha256,
            "file": self.context.file_name,
        }
        columns = ", ".join(self.COMPARED)
        listed = ("mobile", *self.COMPARED, "points_balance", "status", "consent_call", "consent_email")
        listed += ("order_count", "total_spend", "orders_12m", "spend_12m", "avg_order_value")
        listed += ("lifecycle_stage", "rfm_cell", "created_at", "updated_at")
        more_columns, more_values, more_params = insert_defaults(Member, listed)
        # What the rows written refer to, locked as the foreign-key checks would (they are off).
        written = "FROM import_target WHERE member_id IS NULL OR member_changed"
        lock_references(cursor, "stores_store", f"SELECT home_store_id {written}")
        lock_references(cursor, "stores_guide", f"SELECT guide_id {written}")
        lock_references(cursor, "members_tier", f"SELECT tier_id {written}")
        lock_references(
            cursor,
            "members_member",
            "SELECT member_id FROM import_target "
            "WHERE member_id IS NOT NULL AND (member_changed OR tags_changed)",
        )
        lock_references(cursor, "auth_user", "SELECT %(user)s::bigint", params)
        excluded = ", ".join(f"EXCLUDED.{name}" for name in self.COMPARED)
        current = ", ".join(f"m.{name}" for name in self.COMPARED)
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in self.COMPARED)
        # Unchanged rows are not even offered to the upsert; the WHERE guard still keeps a row that
        # became equal meanwhile from being rewritten.
        cursor.execute(
            f"""
            WITH upserted AS (
                INSERT INTO members_member AS m (
                    id, mobile, {columns}, points_balance, status, consent_call, consent_email,
                    order_count, total_spend, orders_12m, spend_12m, avg_order_value, lifecycle_stage,
                    rfm_cell, created_at, updated_at{more_columns})
                SELECT id, mobile, {columns}, 0, 'active', false, false, 0, 0, 0, 0, 0, 'no_purchase', '',
                       %(now)s, %(now)s{more_values}
                  FROM import_target
                 WHERE member_id IS NULL OR member_changed
                ON CONFLICT (mobile) DO UPDATE SET {assignments}, updated_at = EXCLUDED.updated_at
                 WHERE ({current}) IS DISTINCT FROM ({excluded})
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted
            """,
            {**params, **more_params},
        )
        inserted, _updated = cursor.fetchone()
        if inserted != counts["new"]:
            # A member added or deleted by someone else since the rows were classified: the ids drawn
            # for the new members are not theirs. Nothing is kept; the next run sees the change.
            raise FileRefused(
                _(
                    "Members in this file changed while it was imported; nothing was imported. "
                    "Import it again."
                ),
                code="changed",
            )

        # Tags: create the missing ones, then add the member tags (source "import"); existing stay.
        cursor.execute(
            """
            INSERT INTO members_tag (name, "group", description)
            SELECT DISTINCT n.name, '', '' FROM import_target t, unnest(t.tags) AS n(name)
             WHERE t.member_id IS NULL OR t.tags_changed
            ON CONFLICT (name) DO NOTHING
            """
        )
        lock_references(
            cursor,
            "members_tag",
            "SELECT n.name FROM import_target t, unnest(t.tags) AS n(name) "
            "WHERE t.member_id IS NULL OR t.tags_changed",
            key="name",
        )
        cursor.execute(
            f"""
            INSERT INTO members_membertag (member_id, tag_id, source, added_by_id, added_at)
            SELECT t.id, tg.id, '{MemberTag.Source.IMPORT}', %(user)s, %(now)s
              FROM import_target t
              CROSS JOIN unnest(t.tags) AS n(name)
              JOIN members_tag tg ON tg.name = n.name
             WHERE (t.member_id IS NULL AND cardinality(t.tags) > 0) OR t.tags_changed
            ON CONFLICT (member_id, tag_id) DO NOTHING
            """,
            params,
        )

        # Consent: one ledger row per channel whose flag the row changes (new members: grants only).
        # No store: the consent was not collected in a store by this import (and each foreign key
        # costs a row lock at commit, about 10 µs a row).
        # One pass over the rows, both channels of a member together (in member order, as the
        # consent indexes are).
        cursor.execute(
            f"""
            INSERT INTO members_consentrecord (member_id, channel, purpose, action, source, method,
                                               policy_version, evidence, actor_id, store_id, at)
            SELECT t.id, c.channel, '{ConsentRecord.Purpose.MARKETING}',
                   CASE WHEN c.granted THEN 'grant' ELSE 'withdraw' END,
                   '{ConsentRecord.Source.IMPORT}', '{ConsentRecord.Method.CHECKBOX}', %(version)s,
                   jsonb_build_object('import_sha256', %(sha)s::text, 'file', %(file)s::text,
                                      'row', t.row_no),
                   %(user)s, NULL, %(now)s
              FROM import_target t
             CROSS JOIN LATERAL (VALUES ('sms', t.consent_sms, t.o_consent_sms),
                                        ('wecom', t.consent_wecom, t.o_consent_wecom))
                   AS c(channel, granted, was)
             WHERE c.granted IS DISTINCT FROM COALESCE(c.was, false)
            """,
            params,
        )

        # Exclusive-guide history: a changed guide closes the open binding and opens the new one.
        cursor.execute(
            """
            UPDATE members_guideassignment ga SET ended_at = GREATEST(ga.started_at, %(now)s)
              FROM import_target t
             WHERE t.member_id IS NOT NULL AND ga.member_id = t.member_id AND ga.ended_at IS NULL
               AND t.guide_id IS DISTINCT FROM t.o_guide_id
            """,
            params,
        )
        cursor.execute(
            f"""
            INSERT INTO members_guideassignment (member_id, guide_id, started_at, ended_at, reason, actor_id)
            SELECT t.id, t.guide_id, %(now)s, NULL, '{GuideAssignment.Reason.IMPORT}', %(user)s
              FROM import_target t
             WHERE t.guide_id IS NOT NULL AND t.guide_id IS DISTINCT FROM t.o_guide_id
            """,
            params,
        )
        return counts


from . import ledger_importers  # noqa: E402, F401  (registers orders, tags, points and consent)
