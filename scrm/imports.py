"""The import pipeline shared by every importer: upload → dry run → confirm → upsert, as a job with state.

One path for the admin pages (through Celery), ``manage.py import_file`` and the benchmark:
``run_import`` reads the file safely (``scrm.excel``), validates every row in Python in batches,
streams the valid rows with PostgreSQL ``COPY`` into a temporary staging table and lets the importer
upsert them set-based (``INSERT … SELECT … ON CONFLICT … WHERE … IS DISTINCT FROM …``), all in one
transaction with one audit event. django-import-export's row-by-row path is about 100× slower
(bench/import_members.py and ANCHORS section C), so it is not used for writing.

Counts are ``new``, ``updated``, ``unchanged`` and ``invalid``: a dry run computes them with the
same SQL as the real import, so the preview and the result agree. Invalid rows (and every occurrence
of a key that appears twice in the file) come back as a workbook with an error column.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile, File
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from . import audit, excel
from .audit import Actor
from .excel import FileRefused
from .models import ImportJob

# Invalid rows listed on the preview page; the error workbook holds all of them (up to the cap).
PREVIEW_ERRORS = 200
MAX_ERROR_ROWS = 100_000
PROGRESS_TIMEOUT = 24 * 60 * 60
EXCEL_EPOCH = datetime.date(1899, 12, 30)


class ImportNotAllowed(Exception):
    """The user lacks the permissions this importer needs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobNotConfirmable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------------------------------
# Cell cleaners: pure functions from a raw cell (str, int, float, bool, date, datetime) to a value,
# raising CellError with a translated reason. ``None`` means "empty".


class CellError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def is_empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, str) and not value.strip())


def clean_text(value: Any, *, max_length: int) -> str | None:
    if is_empty(value):
        return None
    text = _text(value).strip()
    if len(text) > max_length:
        raise CellError(_("Longer than %(max)d characters.") % {"max": max_length})
    return text


def clean_code(value: Any, *, max_length: int = 32) -> str | None:
    """Codes (store codes, employee numbers): full-width folded, trimmed, upper-cased."""
    if is_empty(value):
        return None
    text = unicodedata.normalize("NFKC", _text(value)).strip().upper()
    if len(text) > max_length:
        raise CellError(_("Longer than %(max)d characters.") % {"max": max_length})
    return text


_DATE_TEXT = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_DATE_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_CLOCK_AT_END = re.compile(r"[ T]+(\d{1,2})[:：](\d{1,2})(?:[:：](\d{1,2}))?$")


def _serial_to_datetime(serial: float) -> datetime.datetime:
    if not 1 <= serial < 2958466:  # 1900-01-01 … 9999-12-31
        raise ValueError(serial)
    return datetime.datetime.combine(EXCEL_EPOCH, datetime.time()) + datetime.timedelta(days=serial)


def _date_from_text(text: str) -> datetime.date:
    match = _DATE_TEXT.match(text) or _DATE_COMPACT.match(text)
    if not match:
        raise ValueError(text)
    return datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def clean_date(value: Any) -> datetime.date | None:
    """A date cell, an Excel serial, or text: 1990/1/2, 1990-01-02, 1990.1.2, 1990年1月2日, 19900102."""
    if is_empty(value):
        return None
    try:
        if isinstance(value, datetime.datetime):
            day = value.date()
        elif isinstance(value, datetime.date):
            day = value
        elif isinstance(value, bool):
            raise ValueError(value)
        elif isinstance(value, int | float):
            day = _serial_to_datetime(value).date()
        else:
            text = unicodedata.normalize("NFKC", str(value)).strip()
            day = _date_from_text(_CLOCK_AT_END.sub("", text))
    except (ValueError, OverflowError):
        raise CellError(
            _("“%(value)s” is not a date; write it as 1990-01-02.") % {"value": _text(value)}
        ) from None
    if day.year < 1900:
        raise CellError(_("“%(value)s” is not a date; write it as 1990-01-02.") % {"value": _text(value)})
    return day


def clean_datetime(value: Any) -> datetime.datetime | None:
    """Like ``clean_date``, with an optional time (``1990-01-02 14:30``); read in the brand's time zone."""
    if is_empty(value):
        return None
    try:
        if isinstance(value, datetime.datetime):
            moment = value
        elif isinstance(value, datetime.date):
            moment = datetime.datetime.combine(value, datetime.time())
        elif isinstance(value, bool):
            raise ValueError(value)
        elif isinstance(value, int | float):
            moment = _serial_to_datetime(value).replace(microsecond=0)
        else:
            text = unicodedata.normalize("NFKC", str(value)).strip()
            clock = datetime.time()
            timed = _CLOCK_AT_END.search(text)
            if timed:
                text = text[: timed.start()]
                clock = datetime.time(int(timed.group(1)), int(timed.group(2)), int(timed.group(3) or 0))
            day = _date_from_text(text)
            moment = datetime.datetime.combine(day, clock)
    except (ValueError, OverflowError):
        raise CellError(
            _("“%(value)s” is not a date and time; write it as 2024-01-02 14:30.") % {"value": _text(value)}
        ) from None
    if moment.year < 1900:
        raise CellError(
            _("“%(value)s” is not a date and time; write it as 2024-01-02 14:30.") % {"value": _text(value)}
        )
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


YES_NO = {
    "是": True,
    "否": False,
    "y": True,
    "n": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "同意": True,
    "不同意": False,
    "已授权": True,
    "未授权": False,
    "授权": True,
    "拒绝": False,
    "√": True,
    "✓": True,
    "×": False,
    "✗": False,
}


def clean_yes_no(value: Any) -> bool | None:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    key = unicodedata.normalize("NFKC", _text(value)).strip().lower()
    try:
        return YES_NO[key]
    except KeyError:
        raise CellError(
            _("“%(value)s” is not yes or no; write 是 or 否.") % {"value": _text(value)}
        ) from None


def clean_choice(value: Any, choices: dict[str, str], *, expected: str) -> str | None:
    """Map a label or code (any case, full-width folded) through ``choices``; ``expected`` lists them."""
    if is_empty(value):
        return None
    key = unicodedata.normalize("NFKC", _text(value)).strip().lower()
    try:
        return choices[key]
    except KeyError:
        raise CellError(
            _("“%(value)s” is not one of: %(expected)s.") % {"value": _text(value), "expected": expected}
        ) from None


def clean_int(value: Any) -> int | None:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise CellError(_("“%(value)s” is not a whole number.") % {"value": value})
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = unicodedata.normalize("NFKC", _text(value)).strip().replace(",", "")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    raise CellError(_("“%(value)s” is not a whole number.") % {"value": _text(value)})


def clean_decimal(value: Any, *, places: int = 2) -> Decimal | None:
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise CellError(_("“%(value)s” is not an amount.") % {"value": value})
    text = unicodedata.normalize("NFKC", _text(value) if not isinstance(value, float) else repr(value))
    text = text.strip().replace(",", "").lstrip("¥￥")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise CellError(_("“%(value)s” is not an amount.") % {"value": _text(value)}) from None
    if not amount.is_finite():
        raise CellError(_("“%(value)s” is not an amount.") % {"value": _text(value)})
    return amount.quantize(Decimal(1).scaleb(-places))


_TAG_SEPARATORS = re.compile(r"[,，、;；]")


def split_tags(value: Any, *, max_length: int = 64) -> list[str]:
    """``护肤，彩妆、香水;高客单`` → four tags; empty parts dropped, repeats removed, order kept."""
    if is_empty(value):
        return []
    tags = []
    for part in _TAG_SEPARATORS.split(_text(value)):
        tag = part.strip()
        if not tag or tag in tags:
            continue
        if len(tag) > max_length:
            raise CellError(
                _("The tag “%(tag)s” is longer than %(max)d characters.") % {"tag": tag, "max": max_length}
            )
        tags.append(tag)
    return tags


# --------------------------------------------------------------------------------------------------
# Importers


@dataclass(frozen=True)
class Column:
    """One column an importer reads: its header (translated), accepted aliases, and template hints."""

    key: str
    header: Any  # lazy translated msgid; the template shows it in the active language
    aliases: tuple[str, ...] = ()
    required: bool = False
    example: Any = ""
    choices: Callable[[], list[str]] | None = None  # drop-down values for the template
    width: int = 14

    def names(self) -> set[str]:
        names = {self.key, *self.aliases}
        for language in ("en", "zh-hans"):
            with translation.override(language):
                names.add(str(self.header))
        return {normalise_header(name) for name in names}


def normalise_header(text: Any) -> str:
    """``' 手机号 * '``, ``'Mobile (required)'`` and ``'mobile'`` compare equal to their plain form."""
    text = unicodedata.normalize("NFKC", _text(text)).strip().lower()
    text = re.sub(r"[（(][^）)]*[）)]", "", text)
    return re.sub(r"[\s*_\-:：]+", "", text)


@dataclass
class RowProblem:
    row: int
    column: str  # the header as written in the file ("" for the row as a whole)
    reason: str

    def text(self) -> str:
        if self.column:
            return _("Row %(row)d, column %(column)s: %(reason)s") % {
                "row": self.row,
                "column": self.column,
                "reason": self.reason,
            }
        return _("Row %(row)d: %(reason)s") % {"row": self.row, "reason": self.reason}


class RowInvalid(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems)
        self.problems = problems  # (column key, reason)


@dataclass
class ImportContext:
    actor: Actor
    now: datetime.datetime
    sha256: str
    file_name: str
    dry_run: bool

    @property
    def user_id(self) -> int | None:
        user = self.actor.user
        return user.pk if user is not None and getattr(user, "pk", None) else None


class Importer:
    """Base class: subclasses declare columns and staging, clean rows in Python and upsert in SQL.

    ``clean_row`` returns the staged tuple (``row_no`` first, in ``staging`` order) or raises
    ``RowInvalid``. ``write`` runs the set-based upsert from the ``import_staging`` table and returns
    the counts. ``key_index`` is the position of the natural key in the staged tuple (duplicates in
    a file are refused).
    """

    do_not_call_in_templates = True  # templates list importer classes; never instantiate them
    name: ClassVar[str]
    verbose_name: ClassVar[Any]
    model: ClassVar[type]
    columns: ClassVar[tuple[Column, ...]]
    staging: ClassVar[tuple[tuple[str, str], ...]]  # (column, SQL type), after row_no
    key_index: ClassVar[int] = 1
    key_column: ClassVar[str] = ""  # the column key of the natural key, for error messages
    key_label: ClassVar[Any] = ""
    description: ClassVar[Any] = ""
    # True when ``write`` locks every row its inserts refer to (``lock_references``): the per-row
    # foreign-key triggers are then skipped (see ``_write``). ``written_tables`` lists every table
    # ``write`` changes, ``skippable_triggers`` the trigger functions on them with nothing to do there.
    checks_references: ClassVar[bool] = False
    written_tables: ClassVar[tuple[str, ...]] = ()
    skippable_triggers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: ImportContext) -> None:
        self.context = context
        self.index: dict[str, int] = {}

    # -- rights --------------------------------------------------------------------------------
    @classmethod
    def required_permissions(cls) -> tuple[str, ...]:
        opts = cls.model._meta
        return (f"{opts.app_label}.add_{opts.model_name}", f"{opts.app_label}.change_{opts.model_name}")

    @classmethod
    def refused_text(cls) -> str:
        return _("You may not import %(what)s: it needs permission to add and change them.") % {
            "what": cls.verbose_name
        }

    @classmethod
    def allowed(cls, user: Any) -> bool:
        return bool(user is not None and user.is_active and user.has_perms(cls.required_permissions()))

    # -- headers -------------------------------------------------------------------------------
    def bind(self, headers: Sequence[Any]) -> None:
        """Map the file's header row onto the columns; refuse the file if a required one is missing."""
        by_name = {name: column for column in self.columns for name in column.names()}
        index: dict[str, int] = {}
        for position, header in enumerate(headers):
            column = by_name.get(normalise_header(header)) if not is_empty(header) else None
            if column is None:
                continue
            if column.key in index:
                raise FileRefused(
                    _("The column “%(column)s” appears twice in the header row.") % {"column": _text(header)},
                    code="wrong_headers",
                )
            index[column.key] = position
        missing = [str(c.header) for c in self.columns if c.required and c.key not in index]
        if missing:
            raise FileRefused(
                _(
                    "The header row lacks the required column(s) %(missing)s. Expected headers: "
                    "%(expected)s. Download the template to see them."
                )
                % {
                    "missing": "、".join(missing),
                    "expected": "、".join(str(c.header) for c in self.columns),
                },
                code="wrong_headers",
            )
        self.index = index
        self.width = max(index.values(), default=-1) + 1

    def padded(self, cells: list[Any]) -> list[Any]:
        """A row with a cell for every bound column (spreadsheets drop trailing empty cells)."""
        return cells if len(cells) >= self.width else cells + [""] * (self.width - len(cells))

    def cell(self, cells: list[Any], key: str) -> Any:
        """The value of column ``key`` in a padded row; "" when the file has no such column."""
        position = self.index.get(key, -1)
        return cells[position] if position >= 0 else ""

    def clean_cell(
        self,
        cells: list[Any],
        key: str,
        cleaner: Callable[..., Any],
        problems: list[tuple[str, str]],
        *,
        missing: Any = None,
        **options: Any,
    ) -> Any:
        """``cleaner(cell, **options)``; a refused value, or an empty required one, becomes a problem."""
        try:
            value = cleaner(self.cell(cells, key), **options)
        except CellError as error:
            problems.append((key, error.message))
            return None
        if value is None and missing is not None:
            problems.append((key, str(missing)))  # a lazy message is translated only when needed
        return value

    def header_of(self, key: str, headers: Sequence[Any]) -> str:
        position = self.index.get(key)
        if position is None:
            column = next((c for c in self.columns if c.key == key), None)
            return str(column.header) if column else key
        return _text(headers[position])

    # -- work ----------------------------------------------------------------------------------
    def prepare(self, cursor: Any) -> None:
        """Load lookups (stores, guides, …) before the COPY starts (no queries during a COPY)."""

    def clean_row(self, cells: list[Any], row_no: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def late_problems(self, cursor: Any) -> list[tuple[int, str, str]]:
        """Rows found invalid against the database after staging: ``(row_no, column key, reason)``."""
        return []

    def linked_problems(
        self, cursor: Any, invalid: dict[int, tuple[list[Any], list[tuple[str, str]]]]
    ) -> list[tuple[int, str, str]]:
        """Staged rows refused because a row they belong with is invalid (``invalid``: row → cells)."""
        return []

    def display(self, staged: dict[str, Any]) -> dict[str, Any]:
        """Cell values for the error workbook of a row known only from staging (``key → value``)."""
        return {key: value for key, value in staged.items() if key in self.index}

    def classify(self, cursor: Any) -> dict[str, int]:
        """``{"new", "updated", "unchanged"}`` of the staged rows, without writing."""
        raise NotImplementedError

    def write(self, cursor: Any) -> dict[str, int]:
        """Upsert the staged rows; return the same counts as ``classify`` would have."""
        raise NotImplementedError

    # -- template ------------------------------------------------------------------------------
    def template_columns(self) -> tuple[Column, ...]:
        return self.columns


def insert_defaults(model: type, given: Sequence[str]) -> tuple[str, str, dict[str, Any]]:
    """Columns the model fills with a constant default that an INSERT listing ``given`` leaves out.

    ``(", col1, col2", ", %(default_0)s, %(default_1)s", params)``: appended to a set-based INSERT's
    column list and SELECT list, so a field added to the model later (with a default) does not break
    the import.
    """
    from django.db.models import NOT_PROVIDED

    names: list[str] = []
    params: dict[str, Any] = {}
    for model_field in model._meta.concrete_fields:
        column = model_field.column
        if column in given or model_field.primary_key or model_field.null:
            continue
        if model_field.db_default is not NOT_PROVIDED:
            continue  # the database fills it
        default = model_field.default
        if default is NOT_PROVIDED or callable(default):
            continue
        params[f"default_{len(names)}"] = model_field.get_db_prep_save(default, connection)
        names.append(column)
    columns = "".join(f", {name}" for name in names)
    placeholders = "".join(f", %({key})s" for key in params)
    return columns, placeholders, params


REGISTRY: dict[str, type[Importer]] = {}


def register(importer: type[Importer]) -> type[Importer]:
    REGISTRY[importer.name] = importer
    return importer


@functools.cache
def _load_importers() -> None:
    # Once per process, whatever was registered before: importers live in the apps
    # (members.importers …); importing the modules registers them.
    from django.apps import apps

    for app_config in apps.get_app_configs():
        module = f"{app_config.name}.importers"
        try:
            __import__(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def importers() -> dict[str, type[Importer]]:
    _load_importers()
    return REGISTRY


def get_importer(name: str) -> type[Importer]:
    try:
        return importers()[name]
    except KeyError:
        raise FileRefused(_("Unknown kind of data: “%(name)s”.") % {"name": name}, code="unknown") from None


def importers_for(user: Any) -> list[type[Importer]]:
    return [importer for importer in importers().values() if importer.allowed(user)]


# --------------------------------------------------------------------------------------------------
# The run


@dataclass
class ImportResult:
    resource: str
    dry_run: bool
    sha256: str
    counts: dict[str, int]
    problems: list[RowProblem] = field(default_factory=list)  # the first PREVIEW_ERRORS
    error_workbook: bytes | None = None

    @property
    def imported_anything(self) -> bool:
        return self.counts.get("new", 0) + self.counts.get("updated", 0) + self.counts.get("unchanged", 0) > 0


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def check_rights(importer: type[Importer], actor: Actor) -> None:
    if actor.user is None:  # the system (command line without --user, the benchmark)
        return
    if not importer.allowed(actor.user):
        raise ImportNotAllowed(importer.refused_text())


class _Problems:
    """Invalid rows: raw cells kept (up to MAX_ERROR_ROWS) for the error workbook."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[list[Any], list[tuple[str, str]]]] = {}
        self.count = 0

    def add(self, row_no: int, cells: list[Any], problems: list[tuple[str, str]]) -> None:
        if row_no in self.rows:
            self.rows[row_no][1].extend(problems)
            return
        self.count += 1
        if len(self.rows) < MAX_ERROR_ROWS:
            self.rows[row_no] = (cells, list(problems))


def run_import(
    resource: str,
    path: str | Path,
    *,
    actor: Actor,
    dry_run: bool,
    file_name: str | None = None,
    expected_sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    job: ImportJob | None = None,
) -> ImportResult:
    """Validate ``path`` and (unless ``dry_run``) upsert it, all or nothing, audited.

    Raises ``FileRefused`` (the file as a whole: unsafe, wrong headers, changed since the preview) or
    ``ImportNotAllowed``; nothing is written then. Row-level problems never raise: they are counted
    as ``invalid`` and returned (and written to the error workbook).
    """
    importer_class = get_importer(resource)
    check_rights(importer_class, actor)
    path = Path(path)
    file_name = file_name or path.name
    sha256 = file_sha256(path)
    if expected_sha256 and sha256 != expected_sha256:
        raise FileRefused(
            _("The file changed after it was checked; upload it again to check it before importing."),
            code="changed",
        )
    sheet = excel.open_sheet(path, name=file_name)
    context = ImportContext(
        actor=actor, now=timezone.now(), sha256=sha256, file_name=file_name, dry_run=dry_run
    )
    importer = importer_class(context)
    total = max((sheet.rows_estimate or 1) - 1, 0) or None
    problems = _Problems()
    headers: list[Any] = []
    with audit.app_audited():
        raw = connection.connection  # the psycopg connection, inside Django's transaction
        with raw.cursor() as cursor:
            importer.prepare(cursor)
            columns = ", ".join(["row_no", *(name for name, _type in importer.staging)])
            types = ", ".join(["row_no integer", *(f"{name} {kind}" for name, kind in importer.staging)])
            # Dropped at commit; dropped explicitly too when the run is nested in a longer transaction.
            cursor.execute("DROP TABLE IF EXISTS import_staging, import_target")
            cursor.execute(f"CREATE TEMP TABLE import_staging ({types}) ON COMMIT DROP")
            seen: dict[Any, int] = {}
            duplicates: dict[int, list[int]] = {}  # first row of a repeated key → the later rows
            key_index = importer.key_index
            done = 0
            batches = excel.iter_row_batches(sheet)
            with cursor.copy(f"COPY import_staging ({columns}) FROM STDIN") as copy:
                write_row = copy.write_row
                clean_row = importer.clean_row
                for first_row, rows in batches:
                    start = 0
                    if not headers:
                        # The first row with any content is the header row.
                        while start < len(rows) and all(is_empty(v) for v in rows[start]):
                            start += 1
                        if start == len(rows):
                            continue
                        headers = list(rows[start])
                        importer.bind(headers)
                        start += 1
                    for offset in range(start, len(rows)):
                        cells = rows[offset]
                        row_no = first_row + offset
                        try:
                            staged = clean_row(cells, row_no)
                        except RowInvalid as invalid:
                            if any(not is_empty(v) for v in cells):
                                problems.add(row_no, cells, invalid.problems)
                            continue
                        if staged is None:  # an empty row
                            continue
                        key = staged[key_index]
                        first = seen.setdefault(key, row_no)
                        if first != row_no:
                            duplicates.setdefault(first, []).append(row_no)
                            problems.add(
                                row_no,
                                cells,
                                [
                                    (
                                        importer.key_column,
                                        _("%(key)s also appears in row %(row)d; each may appear once.")
                                        % {"key": importer.key_label, "row": first},
                                    )
                                ],
                            )
                            continue
                        write_row(staged)
                    done += len(rows)
                    if progress is not None:
                        progress(done, total)
            del seen
            if not headers:
                raise FileRefused(_("The file has no header row and no data."), code="empty")

            late: list[tuple[int, str, str]] = [
                (
                    first,
                    importer.key_column,
                    _("%(key)s appears again in row(s) %(rows)s; each may appear once.")
                    % {"key": importer.key_label, "rows": ", ".join(str(r) for r in later[:10])},
                )
                for first, later in duplicates.items()
            ]
            late.extend(importer.late_problems(cursor))
            if late:
                _move_late_problems(cursor, importer, late, problems)
            # Rows that stand or fall together (an order's lines): one refused row refuses the rest.
            linked = importer.linked_problems(cursor, problems.rows)
            if linked:
                _move_late_problems(cursor, importer, linked, problems)

            counts = importer.classify(cursor) if dry_run else _write(cursor, importer)
            counts["invalid"] = problems.count
            counts["total"] = counts["new"] + counts["updated"] + counts["unchanged"] + problems.count
            changes = {
                "resource": resource,
                "file": file_name,
                "sha256": sha256,
                "counts": counts,
                "user": actor.label,
            }
            cursor.execute("DROP TABLE IF EXISTS import_staging, import_target")
            if job is not None:
                audit.record(
                    actor,
                    "import.completed" if not dry_run else "import.validated",
                    target=job,
                    changes=changes,
                )
            else:
                audit.record(
                    actor,
                    "import.completed" if not dry_run else "import.validated",
                    target_type="scrm.importjob",
                    target_id=sha256[:16],
                    changes=changes,
                )
    preview = [
        RowProblem(row_no, importer.header_of(key, headers), reason)
        for row_no in sorted(problems.rows)[:PREVIEW_ERRORS]
        for key, reason in problems.rows[row_no][1]
    ]
    workbook = error_workbook(headers, problems, importer) if problems.count else None
    return ImportResult(
        resource=resource,
        dry_run=dry_run,
        sha256=sha256,
        counts=counts,
        problems=preview,
        error_workbook=workbook,
    )


def _write(cursor: Any, importer: Importer) -> dict[str, int]:
    """``importer.write``; with the row triggers off when the importer checks its references itself.

    Every foreign key is checked by a trigger per inserted row, at COMMIT (Django's are deferred):
    about 10 µs a key, nine keys per member row with its tags, consent and guide, so more than the
    writing itself. An importer with ``checks_references`` looks its references up before staging
    and locks them set-based in ``write`` (``lock_references``, ``FOR KEY SHARE`` as the trigger
    would), so the triggers are switched off for its statements (``session_replication_role`` =
    replica, local to the transaction; the audit triggers stand aside inside the service anyway).
    Unique, check and not-null constraints still hold. A database role that may not set the
    parameter (``GRANT SET ON PARAMETER session_replication_role``) runs the same statements with the
    triggers on.
    """
    if not importer.checks_references:
        return importer.write(cursor)
    cursor.execute(
        "SELECT current_setting('session_replication_role'), "
        "has_parameter_privilege('session_replication_role', 'SET')"
    )
    previous, allowed = cursor.fetchone()
    if not allowed or previous == "replica":
        return importer.write(cursor)
    # Only the audit capture (the service records the import itself), the append-only guards (nothing
    # is updated there) and what the importer names may be skipped: any other trigger on a written
    # table (one added later, say) keeps every trigger on.
    cursor.execute(
        """
        SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND t.tgrelid = ANY(%s::regclass[])
           AND p.proname <> ALL(%s)
        """,
        [
            list(importer.written_tables),
            ["scrm_capture_changes", "scrm_refuse_change", *importer.skippable_triggers],
        ],
    )
    if cursor.fetchone()[0] or not importer.written_tables:
        return importer.write(cursor)
    cursor.execute("SELECT set_config('session_replication_role', 'replica', true)")
    counts = importer.write(cursor)
    # On an error the transaction (or savepoint) rolls back and takes the setting with it.
    cursor.execute("SELECT set_config('session_replication_role', %s, true)", [previous])
    return counts


def lock_references(cursor: Any, table: str, ids_sql: str, params: Any = None, *, key: str = "id") -> None:
    """Lock the rows of ``table`` whose ``key`` (the id) ``ids_sql`` selects, as a foreign-key check would.

    ``FOR KEY SHARE`` keeps them from being deleted (or their key changed) until the import commits;
    an id no longer there (deleted since the lookups were read) refuses the import as a whole.
    """
    cursor.execute(
        f"""
        WITH wanted AS (SELECT DISTINCT id FROM ({ids_sql}) w(id) WHERE id IS NOT NULL),
             locked AS (SELECT r.{key} FROM {table} r WHERE r.{key} IN (SELECT id FROM wanted)
                        FOR KEY SHARE OF r)
        SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM locked)
        """,
        params,
    )
    if cursor.fetchone()[0]:
        raise FileRefused(
            _(
                "Data this file refers to changed while it was imported; nothing was imported. "
                "Import it again."
            ),
            code="changed",
        )


def _move_late_problems(
    cursor: Any, importer: Importer, late: list[tuple[int, str, str]], problems: _Problems
) -> None:
    """Take rows found invalid after staging out of the staging table, into the problems."""
    row_numbers = sorted({row for row, _key, _reason in late})
    names = [name for name, _type in importer.staging]
    cursor.execute(
        f"DELETE FROM import_staging WHERE row_no = ANY(%s) RETURNING row_no, {', '.join(names)}",
        [row_numbers],
    )
    staged = {row[0]: dict(zip(names, row[1:], strict=True)) for row in cursor.fetchall()}
    width = max(importer.index.values(), default=-1) + 1
    for row_no, key, reason in late:
        values = importer.display(staged.get(row_no, {}))
        cells: list[Any] = [""] * width
        for column_key, value in values.items():
            position = importer.index.get(column_key)
            if position is not None:
                cells[position] = value
        problems.add(row_no, cells, [(key, reason)])


# --------------------------------------------------------------------------------------------------
# Workbooks out: invalid rows, templates


def _write_cell(sheet: Any, row: int, column: int, value: Any, formats: dict[str, Any]) -> None:
    # Text is always written as text: a cell can never become a formula.
    if value is None or value == "":
        return
    if isinstance(value, bool):
        sheet.write_boolean(row, column, value)
    elif isinstance(value, datetime.datetime):
        if timezone.is_aware(value):
            value = timezone.localtime(value).replace(tzinfo=None)
        sheet.write_datetime(row, column, value, formats["datetime"])
    elif isinstance(value, datetime.date):
        sheet.write_datetime(row, column, value, formats["date"])
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        sheet.write_number(row, column, value)
    elif isinstance(value, list | tuple):
        sheet.write_string(row, column, "，".join(str(v) for v in value))
    else:
        sheet.write_string(row, column, str(value))


def error_workbook(headers: Sequence[Any], problems: _Problems, importer: Importer) -> bytes:
    """The invalid rows with their original cells, plus an error column saying what to fix."""
    import xlsxwriter

    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"constant_memory": True, "in_memory": False})
    sheet = workbook.add_worksheet(_("Invalid rows")[:31])
    bold = workbook.add_format({"bold": True, "bg_color": "#F2F2F2"})
    red = workbook.add_format({"font_color": "#C00000", "text_wrap": False})
    formats = {
        "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
        "datetime": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
    }
    width = len(headers)
    for column, header in enumerate(headers):
        sheet.write_string(0, column, _text(header) if not is_empty(header) else "", bold)
        sheet.set_column(column, column, 14)
    sheet.write_string(0, width, _("Errors"), bold)
    sheet.set_column(width, width, 60)
    for out_row, row_no in enumerate(sorted(problems.rows), start=1):
        cells, row_problems = problems.rows[row_no]
        for column in range(min(len(cells), width)):
            _write_cell(sheet, out_row, column, cells[column], formats)
        text = "; ".join(
            RowProblem(row_no, importer.header_of(key, headers), reason).text()
            for key, reason in row_problems
        )
        sheet.write_string(out_row, width, text, red)
    sheet.freeze_panes(1, 0)
    workbook.close()
    return buffer.getvalue()


def template_workbook(resource: str) -> bytes:
    """A workbook to fill in: the header row (active language), an example row, drop-downs for codes."""
    import xlsxwriter

    importer_class = get_importer(resource)
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer)
    sheet = workbook.add_worksheet(str(importer_class.verbose_name)[:31])
    bold = workbook.add_format({"bold": True, "bg_color": "#F2F2F2", "border": 1})
    required = workbook.add_format({"bold": True, "bg_color": "#FCE4D6", "border": 1})
    text = workbook.add_format({"num_format": "@"})
    formats = {
        "date": workbook.add_format({"num_format": "yyyy-mm-dd"}),
        "datetime": workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"}),
    }
    for position, column in enumerate(importer_class.columns):
        header = str(column.header) + (" *" if column.required else "")
        sheet.write_string(0, position, header, required if column.required else bold)
        # Text columns stay text, so Excel keeps leading zeros and long numbers (mobiles) intact.
        sheet.set_column(position, position, column.width, text if column.choices is None else None)
        example = column.example() if callable(column.example) else column.example
        _write_cell(sheet, 1, position, example, formats)
        if column.choices is not None:
            options = [str(option) for option in column.choices()]
            sheet.data_validation(
                1,
                position,
                10_000,
                position,
                {
                    "validate": "list",
                    "source": options,
                    "error_title": str(column.header),
                    "error_message": _("Choose a value from the list."),
                },
            )
    sheet.freeze_panes(1, 0)
    workbook.close()
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# Jobs: upload → validate (task) → confirm → import (task), with progress for the page


def progress_key(job_id: int) -> str:
    return f"imports:progress:{job_id}"


def job_progress(job: ImportJob) -> dict[str, Any]:
    """What the page polls: state, rows done and total (live from the cache while running)."""
    live = (
        cache.get(progress_key(job.pk)) if job.state in (job.State.VALIDATING, job.State.IMPORTING) else None
    )
    rows_done, rows_total = live or (job.rows_done, job.rows_total)
    percent = min(100, round(100 * rows_done / rows_total)) if rows_total else 0
    if job.state in (job.State.VALIDATED, job.State.DONE):
        percent = 100
    return {
        "id": job.pk,
        "state": job.state,
        "state_label": str(job.get_state_display()),
        "rows_done": rows_done,
        "rows_total": rows_total,
        "percent": percent,
        "counts": {k: v for k, v in job.counts.items() if k != "errors"},
        "error": job.error,
        "finished": job.state in (job.State.VALIDATED, job.State.DONE, job.State.FAILED),
    }


def _progress_reporter(job_id: int) -> Callable[[int, int | None], None]:
    def report(done: int, total: int | None) -> None:
        cache.set_many(
            {progress_key(job_id): (done, total), heartbeat_key(job_id): time.time()}, PROGRESS_TIMEOUT
        )

    return report


@audit.service
def create_import_job(*, resource: str, upload: File, file_name: str, actor: Actor) -> ImportJob:
    """Store an uploaded file as a job after the safety checks; the dry run is enqueued after commit.

    Refused files (``FileRefused``) and users without the right (``ImportNotAllowed``) leave nothing.
    """
    from .tasks import validate_import_task

    importer = get_importer(resource)
    check_rights(importer, actor)
    limits = excel.Limits.from_settings()
    if upload.size is not None and upload.size > limits.max_bytes:
        raise FileRefused(
            _("The file is %(size)s; the limit is %(limit)s. Split it into smaller files.")
            % {"size": excel._human_size(upload.size), "limit": excel._human_size(limits.max_bytes)},
            code="too_big",
        )
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    job = ImportJob(
        resource=resource,
        original_name=Path(file_name).name[:255],
        sha256=digest.hexdigest(),
        size=upload.size or 0,
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
    )
    suffix = Path(file_name).suffix.lower()
    job.file.save(f"{job.sha256[:16]}{suffix}", upload, save=False)
    try:
        sheet = excel.open_sheet(job.file.path, name=file_name)
    except FileRefused:
        job.file.delete(save=False)
        raise
    job.rows_total = max((sheet.rows_estimate or 1) - 1, 0)
    job.save(force_insert=True)
    audit.record(
        actor,
        "import.uploaded",
        target=job,
        changes={"resource": resource, "file": job.original_name, "sha256": job.sha256, "size": job.size},
    )
    transaction.on_commit(lambda: validate_import_task.delay(job.pk))
    return job


def _mark(job_id: int, **values: Any) -> None:
    # Job bookkeeping is not business data (no row triggers on it); the audit events above and below
    # record what happened to the data.
    ImportJob.objects.filter(pk=job_id).update(**values)


def _finish(job: ImportJob, result: ImportResult, *, state: str) -> None:
    counts: dict[str, Any] = dict(result.counts)
    counts["errors"] = [[p.row, p.column, p.reason] for p in result.problems]
    job.counts = counts
    job.state = state
    job.rows_done = job.rows_total or result.counts.get("total", 0)
    job.finished_at = timezone.now()
    if result.error_workbook:
        stem = Path(job.original_name).stem[:80]
        name = _("%(file)s-invalid-rows") % {"file": stem}
        job.error_file.save(f"{name}.xlsx", ContentFile(result.error_workbook), save=False)
    else:
        job.error_file = ""
    job.save(update_fields=["counts", "state", "rows_done", "finished_at", "error_file"])


# A worker holds this session-level advisory lock (with the job id) for as long as it runs a job: a live
# run is never started twice, and the reconciler can tell a dead worker (the lock went with its
# connection) from a slow one. The key is "IMPJ" in ASCII.
JOB_LOCK = 0x494D504A


def _try_lock(job_id: int, *, session: bool) -> bool:
    function = "pg_try_advisory_lock" if session else "pg_try_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", [JOB_LOCK, job_id])
        return bool(cursor.fetchone()[0])


def _unlock(job_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCK, job_id])


def heartbeat_key(job_id: int) -> str:
    return f"imports:heartbeat:{job_id}"


def _run_job(job_id: int, *, dry_run: bool) -> ImportJob | None:
    if not _try_lock(job_id, session=True):
        return ImportJob.objects.filter(pk=job_id).first()  # another worker is running it
    try:
        return _run_job_locked(job_id, dry_run=dry_run)
    finally:
        _unlock(job_id)


def _run_job_locked(job_id: int, *, dry_run: bool) -> ImportJob | None:
    job = ImportJob.objects.select_related("created_by").filter(pk=job_id).first()
    if job is None:
        return None
    running, expected = (
        (ImportJob.State.VALIDATING, ImportJob.State.UPLOADED)
        if dry_run
        else (ImportJob.State.IMPORTING, ImportJob.State.IMPORTING)
    )
    if job.state != expected:
        return job  # already done (a redelivered message): nothing to do twice
    _mark(job.pk, state=running, started_at=timezone.now(), rows_done=0, error="", attempts=F("attempts") + 1)
    job.state = running
    actor = Actor.for_user(job.created_by) if job.created_by else Actor.system("import")
    try:
        # The import and the job's "done" commit together: a worker lost before the commit left
        # nothing, one lost after it left a finished job, so a re-queued run never imports twice.
        with transaction.atomic():
            result = run_import(
                job.resource,
                job.file.path,
                actor=actor,
                dry_run=dry_run,
                file_name=job.original_name,
                expected_sha256=job.sha256,
                progress=_progress_reporter(job.pk),
                job=job,
            )
            _finish(job, result, state=ImportJob.State.VALIDATED if dry_run else ImportJob.State.DONE)
    except (FileRefused, ImportNotAllowed) as refused:
        _mark(job.pk, state=ImportJob.State.FAILED, error=refused.message, finished_at=timezone.now())
        with audit.app_audited():
            audit.record(
                actor,
                "import.refused",
                target=job,
                changes={"resource": job.resource, "sha256": job.sha256, "error": refused.message},
            )
        job.refresh_from_db()
        return job
    finally:
        cache.delete_many([progress_key(job.pk), heartbeat_key(job.pk)])
    return job


def validate_import_job(job_id: int) -> ImportJob | None:
    """The dry run of an uploaded job (run by the Celery task): counts, invalid rows, nothing written."""
    return _run_job(job_id, dry_run=True)


def import_job(job_id: int) -> ImportJob | None:
    """The real import of a confirmed job (run by the Celery task)."""
    return _run_job(job_id, dry_run=False)


@audit.service
def confirm_import_job(job: ImportJob, *, actor: Actor) -> ImportJob:
    """Start importing a checked job; a second click (or another user's) loses the compare-and-set."""
    from .tasks import import_task

    check_rights(get_importer(job.resource), actor)
    started = ImportJob.objects.filter(pk=job.pk, state=ImportJob.State.VALIDATED).update(
        state=ImportJob.State.IMPORTING, rows_done=0
    )
    if not started:
        raise JobNotConfirmable(_("This import is not waiting for confirmation."))
    audit.record(
        actor, "import.confirmed", target=job, changes={"resource": job.resource, "sha256": job.sha256}
    )
    transaction.on_commit(lambda: import_task.delay(job.pk))
    job.refresh_from_db()
    return job


def fail_job(job_id: int, error: str) -> None:
    """Called by the task base class when a run crashed: the page shows the failure."""
    _mark(job_id, state=ImportJob.State.FAILED, error=error[:2000], finished_at=timezone.now())
    cache.delete(progress_key(job_id))


def settings_limits_text() -> str:
    limits = excel.Limits.from_settings()
    return _("xlsx or csv, up to %(size)s and %(rows)s rows.") % {
        "size": excel._human_size(limits.max_bytes),
        "rows": f"{limits.max_rows:,}",
    }


# --------------------------------------------------------------------------------------------------
# Maintenance (periodic tasks): jobs whose worker died, old job files


@dataclass
class ReconcileResult:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _last_sign_of_life(job: ImportJob) -> float:
    beat = cache.get(heartbeat_key(job.pk))
    started = (job.started_at or job.created_at).timestamp()
    return max(started, beat or 0.0)


def reconcile_import_jobs(*, now: datetime.datetime | None = None) -> ReconcileResult:
    """Re-queue, or fail, jobs left checking or importing by a worker that died.

    A job is stalled when it reported no progress for ``SCRM_IMPORT_STALL_SECONDS`` and no worker
    holds its lock (a live worker keeps it for the whole run, through the long SQL steps that report
    no progress). A run is one transaction, so a dead run left nothing half-written and running it
    again is safe; after ``SCRM_IMPORT_MAX_ATTEMPTS`` runs (a file that kills its worker, say by
    memory) or without its file, the job fails with a message saying so.
    """
    from .tasks import import_task, validate_import_task

    now = now or timezone.now()
    cutoff = now.timestamp() - settings.SCRM_IMPORT_STALL_SECONDS
    running = (ImportJob.State.VALIDATING, ImportJob.State.IMPORTING)
    result = ReconcileResult()
    for job in ImportJob.objects.filter(state__in=running).order_by("pk"):
        if _last_sign_of_life(job) > cutoff:
            continue
        with transaction.atomic(), audit.app_audited():
            job = ImportJob.objects.select_for_update().filter(pk=job.pk, state__in=running).first()
            if job is None or not _try_lock(job.pk, session=False):
                continue  # finished meanwhile, or a worker is alive and busy
            checking = job.state == ImportJob.State.VALIDATING
            file_present = bool(job.file) and job.file.storage.exists(job.file.name)
            if job.attempts >= settings.SCRM_IMPORT_MAX_ATTEMPTS or not file_present:
                with translation.override(settings.LANGUAGE_CODE):
                    if file_present:
                        error = _(
                            "The worker running this %(step)s stopped %(times)d times; nothing was "
                            "imported. Split the file into smaller files and upload them again."
                        ) % {"step": _("check") if checking else _("import"), "times": job.attempts}
                    else:
                        error = _("The file of this import is gone; nothing was imported. Upload it again.")
                _mark(job.pk, state=ImportJob.State.FAILED, error=error, finished_at=now)
                result.failed.append(job.pk)
                action = "import.abandoned"
            else:
                # Checking starts again from "uploaded"; importing stays "importing" (as confirmed).
                # The stall clock restarts, so a run still waiting in a busy queue is not sent twice.
                _mark(job.pk, started_at=now, **({"state": ImportJob.State.UPLOADED} if checking else {}))
                task = validate_import_task if checking else import_task
                transaction.on_commit(lambda task=task, pk=job.pk: task.delay(pk))
                result.requeued.append(job.pk)
                action = "import.requeued"
            audit.record(
                Actor.system("reconcile_import_jobs"),
                action,
                target=job,
                changes={"state": job.state, "attempts": job.attempts, "resource": job.resource},
            )
        cache.delete_many([progress_key(job.pk), heartbeat_key(job.pk)])
    return result


def delete_old_import_files(*, days: int, now: datetime.datetime | None = None) -> int:
    """Delete the uploads and invalid-row workbooks of import jobs created more than ``days`` ago.

    The job rows stay (with their counts and audit trail). A job still waiting for confirmation loses
    its file too and is failed with a message; running jobs are left alone.
    """
    now = now or timezone.now()
    before = now - datetime.timedelta(days=days)
    old = ImportJob.objects.filter(created_at__lt=before).exclude(
        state__in=(ImportJob.State.VALIDATING, ImportJob.State.IMPORTING)
    )
    deleted = 0
    for job in old.exclude(file="", error_file="").iterator():
        for stored in (job.file, job.error_file):
            if stored:
                stored.delete(save=False)
                deleted += 1
        values: dict[str, Any] = {"file": "", "error_file": ""}
        if job.state in (ImportJob.State.UPLOADED, ImportJob.State.VALIDATED):
            with translation.override(settings.LANGUAGE_CODE):
                values["error"] = _(
                    "Not confirmed within %(days)d days: the file was deleted. Upload it again."
                ) % {"days": days}
            values.update(state=ImportJob.State.FAILED, finished_at=now)
        _mark(job.pk, **values)
    return deleted
