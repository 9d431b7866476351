"""Exports at brand scale: a queryset plus a column spec, streamed to xlsx or csv as a background job.

A *source* (``ExportSource``) says what can be exported and by whom: the model, the columns (a
``values_list`` path, a header msgid, how a value shows) and how to rebuild the rows from a job's
params. Admin changelists register one per ModelAdmin (``scrm.admin_base.BackgroundExportMixin``);
a segment registers its own the same way (``register_source``).

The path of every export, whatever its source:

1. ``request_export`` (the user's request): checks the permission, decides masking and notes the
   user's language, stores the job, audits ``export.requested`` and enqueues the task after commit.
2. ``run_export`` (the Celery worker): re-checks the permission and the masking against the user as
   they are now, rebuilds the queryset, passes it through ``scoped``, streams it with
   ``values_list().iterator()`` into XlsxWriter's ``constant_memory`` mode (or a UTF-8 csv with a BOM),
   stores the file and audits ``export.completed`` with the row count and the masking.
3. ``record_download``: the requester (or an HQ administrator) fetches the file; audited too.

No cell ever becomes a formula: xlsx text goes through ``write_string`` only, and csv text that a
spreadsheet would run (``=``, ``+``, ``-``, ``@``, tab, CR) gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import IO, Any

import xlsxwriter
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, FloatField, Func, IntegerField, Model, QuerySet, Value
from django.utils import timezone, translation
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import audit
from .audit import Actor
from .models import ExportJob
from .roles import Role, role_of
from .scoping import scoped

FULL_MOBILE_PERMISSION = "members.view_full_mobile"

# Rows fetched per round trip of the server-side cursor; 5,000 rows of ~25 columns is a few MB.
CHUNK_SIZE = 5000

# Excel's last row is 1,048,576; one is the header. XlsxWriter silently drops cells past it.
EXCEL_DATA_ROWS = 1_048_575

# A spreadsheet treats a cell starting with one of these as a formula (CSV injection: "=HYPERLINK(…)").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

CONTENT_TYPES = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}

StrOrPromise = str | Promise


class ExportError(Exception):
    """An export that cannot run; the message is translated and shown on the job."""


# --------------------------------------------------------------------------------------------------
# Column specs


class Kind(StrEnum):
    """How a column's cells are written: text is always text, never a formula or a number."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    DATETIME = "datetime"


@dataclass(frozen=True)
class Column:
    """One column of an export.

    ``path`` is a ``values_list`` path (``home_store__code``). ``labels`` maps stored codes to their
    labels (choices, booleans), rendered in the requesting user's language. ``mask`` is how personal
    data shows to someone without the permission; ``show`` how the value shows otherwise.
    """

    path: str
    header: StrOrPromise
    kind: Kind = Kind.TEXT
    labels: Sequence[tuple[Any, StrOrPromise]] = ()
    mask: Callable[[Any], Any] | None = None
    show: Callable[[Any], Any] | None = None

    @property
    def personal(self) -> bool:
        return self.mask is not None


def yes_no() -> tuple[tuple[bool, StrOrPromise], ...]:
    """Labels for a boolean column."""
    return ((True, _("Yes")), (False, _("No")))


def json_text(value: Any) -> str:
    """JSON cells (evidence, details) as compact text that keeps Chinese readable."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _converter(column: Column, *, masked: bool) -> Callable[[Any], Any] | None:
    """What turns a stored value into its cell value; None when the value goes in as it is."""
    if column.labels:
        table = {code: str(label) for code, label in column.labels}
        return lambda value: table.get(value, value)
    if column.mask is not None and masked:
        return column.mask
    if column.show is not None:
        return column.show
    if column.kind == Kind.DATETIME:
        # Excel has no time zones: datetimes go out as the brand's local wall time. A number is
        # already an Excel date, computed in local time by the database (``ExcelDateTime``).
        zone = timezone.get_current_timezone()
        return lambda value: (
            value if value.__class__ is float else value.astimezone(zone).replace(tzinfo=None)
        )
    return None


def cell_rows(
    rows: Iterable[Sequence[Any]], columns: Sequence[Column], *, masked: bool
) -> Iterator[list[Any]]:
    """Stored values → cell values: labels, masking and local time, column by column. None stays None."""
    converters = [(index, f) for index, c in enumerate(columns) if (f := _converter(c, masked=masked))]
    for row in rows:
        cells = list(row)
        for index, convert in converters:
            value = cells[index]
            if value is not None:
                cells[index] = convert(value)
        yield cells


# --------------------------------------------------------------------------------------------------
# Writers: one pass, constant memory


def neutralise_formula(value: str) -> str:
    """Text that a spreadsheet would run as a formula gets a leading apostrophe (csv only)."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def sheet_title(title: StrOrPromise) -> str:
    """A valid worksheet name: at most 31 characters, none of ``[]:*?/\\``."""
    return re.sub(r"[\[\]:*?/\\]", " ", str(title)).strip()[:31] or "Sheet1"


def write_xlsx(
    handle: IO[bytes],
    headers: Sequence[str],
    kinds: Sequence[Kind],
    rows: Iterable[Sequence[Any]],
    *,
    title: str,
    sheet_rows: int = EXCEL_DATA_ROWS,
) -> int:
    """Worksheets written row by row in ``constant_memory`` mode; returns the number of data rows.

    Each cell goes through the writer of its column's kind: text through ``write_string`` (never a
    formula, a link or a number, whatever it starts with), numbers, dates and datetimes typed. A sheet
    holds at most ``sheet_rows`` rows (Excel's limit); the rest continue on "title (2)", "title (3)"…
    with the header row again, instead of being dropped.
    """
    workbook = xlsxwriter.Workbook(
        handle,
        {
            "constant_memory": True,
            "tmpdir": tempfile.gettempdir(),
            # Belt and braces: nothing below calls the generic write(), which these options govern.
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
        },
    )
    bold = workbook.add_format({"bold": True})
    formats = {
        Kind.DATE: workbook.add_format({"num_format": "yyyy-mm-dd"}),
        Kind.DATETIME: workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
    }
    widths = {Kind.TEXT: 14, Kind.NUMBER: 10, Kind.DATE: 11, Kind.DATETIME: 19}

    def add_sheet(number: int) -> list[tuple[int, Callable[[int, int, Any], Any]]]:
        """A new sheet with its header row; returns how each column of a row is written on it."""
        suffix = f" ({number})" if number > 1 else ""
        sheet = workbook.add_worksheet(sheet_title(title)[: 31 - len(suffix)] + suffix)
        for col, kind in enumerate(kinds):
            sheet.set_column(col, col, widths[kind])
        sheet.freeze_panes(1, 0)
        for col, header in enumerate(headers):
            sheet.write_string(0, col, header, bold)
        write_string, write_number, write_datetime = (
            sheet.write_string,
            sheet.write_number,
            sheet.write_datetime,
        )
        plan: list[tuple[int, Callable[[int, int, Any], Any]]] = []
        for col, kind in enumerate(kinds):
            if kind == Kind.TEXT:
                plan.append((col, lambda r, c, v: write_string(r, c, v if v.__class__ is str else str(v))))
            elif kind == Kind.NUMBER:
                plan.append((col, write_number))
            else:
                plan.append((col, partial(_write_date, write_number, write_datetime, formats[kind])))
        return plan

    sheets = 1
    plan = add_sheet(sheets)
    count = line = 0
    for row in rows:
        if line == sheet_rows:
            sheets += 1
            plan, line = add_sheet(sheets), 0
        count += 1
        line += 1
        for col, write in plan:
            value = row[col]
            if value is not None and value != "":  # empty text stays an empty cell
                write(line, col, value)
    workbook.close()
    return count


def _write_date(
    write_number: Callable[..., Any],
    write_datetime: Callable[..., Any],
    cell_format: Any,
    row: int,
    col: int,
    value: Any,
) -> None:
    # An Excel date is a day number with a date format: a number from the database goes in as it is.
    if value.__class__ is float or value.__class__ is int:
        write_number(row, col, value, cell_format)
    else:
        write_datetime(row, col, value, cell_format)


def write_csv(
    handle: IO[bytes], headers: Sequence[str], kinds: Sequence[Kind], rows: Iterable[Sequence[Any]]
) -> int:
    """UTF-8 with a BOM (so Excel reads the Chinese), formulas neutralised; returns the data rows."""
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="", write_through=False)
    writer = csv.writer(text)
    writer.writerow([neutralise_formula(str(header)) for header in headers])
    formatters = [_csv_formatter(kind) for kind in kinds]
    count = 0
    for row in rows:
        writer.writerow(["" if value is None else f(value) for f, value in zip(formatters, row, strict=True)])
        count += 1
    text.flush()
    text.detach()  # the caller owns the binary handle
    return count


def _csv_formatter(kind: Kind) -> Callable[[Any], str]:
    if kind == Kind.TEXT:
        return lambda value: neutralise_formula(value if value.__class__ is str else str(value))
    if kind == Kind.DATETIME:
        return lambda value: value.strftime("%Y-%m-%d %H:%M:%S")
    if kind == Kind.DATE:
        return lambda value: value.isoformat()
    return str  # numbers: a negative number is a number, not a formula


def write_table(
    handle: IO[bytes],
    file_format: str,
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    *,
    title: StrOrPromise,
) -> int:
    """Headers (in the active language) and cell rows into ``handle``; returns the data rows written."""
    headers = [str(column.header) for column in columns]
    kinds = [Kind.TEXT if column.labels else column.kind for column in columns]
    if file_format == "xlsx":
        return write_xlsx(handle, headers, kinds, rows, title=str(title))
    if file_format == "csv":
        return write_csv(handle, headers, kinds, rows)
    raise ValueError(file_format)


def write_queryset(
    handle: IO[bytes],
    queryset: QuerySet[Any],
    columns: Sequence[Column],
    *,
    file_format: str,
    masked: bool,
    title: StrOrPromise,
) -> int:
    """Stream ``queryset`` into ``handle``: one server-side cursor, ``CHUNK_SIZE`` rows per fetch.

    Inside a transaction the cursor streams from a snapshot; in autocommit Django would declare it
    ``WITH HOLD``, which makes PostgreSQL materialise the whole result before the first row.
    """
    selected = [_selected(column, file_format) for column in columns]
    with transaction.atomic():
        rows = queryset.values_list(*selected).iterator(chunk_size=CHUNK_SIZE)
        return write_table(handle, file_format, columns, cell_rows(rows, columns, masked=masked), title=title)


class ExcelDateTime(Func):
    """A timestamp as an Excel date (days since 1899-12-30) in a time zone's wall time.

    For xlsx the database does this arithmetic: parsing each timestamp into a Python datetime, moving
    it to local time and turning it back into a day number costs about 6% of a member export. (Excel's
    1900 leap-year quirk makes serials before March 1900 one day off; no member was born then.)
    """

    arg_joiner = " AT TIME ZONE "
    template = "(EXTRACT(EPOCH FROM (%(expressions)s)) / 86400.0 + 25569)::float8"
    output_field = FloatField()

    def __init__(self, path: str, zone: str) -> None:
        super().__init__(F(path), Value(zone))


class ExcelDate(Func):
    """A date as an Excel date (days since 1899-12-30)."""

    template = "(%(expressions)s - DATE '1899-12-30')"
    output_field = IntegerField()

    def __init__(self, path: str) -> None:
        super().__init__(F(path))


def _selected(column: Column, file_format: str) -> str | Func:
    """What to ask the database for: the path, or for xlsx dates the Excel day number itself."""
    if file_format != "xlsx" or column.labels or column.mask is not None or column.show is not None:
        return column.path
    if column.kind == Kind.DATETIME:
        return ExcelDateTime(column.path, timezone.get_current_timezone_name())
    if column.kind == Kind.DATE:
        return ExcelDate(column.path)
    return column.path


# --------------------------------------------------------------------------------------------------
# Sources


QuerysetBuilder = Callable[[Any, Mapping[str, Any]], QuerySet[Any]]


@dataclass(frozen=True)
class ExportSource:
    """What can be exported: rows (rebuilt from a job's params for its user) and their columns.

    ``permissions`` are what a user needs to export at all (``scoped`` decides which rows);
    ``build_queryset(user, params)`` must not scope — ``run_export`` does, every time.
    """

    name: str
    model: type[Model]
    columns: tuple[Column, ...]
    permissions: tuple[str, ...]
    build_queryset: QuerysetBuilder
    title: StrOrPromise = ""

    def may_export(self, user: Any) -> bool:
        return bool(user is not None and user.is_active and user.has_perms(self.permissions))

    @property
    def label(self) -> str:
        return str(self.title or self.model._meta.verbose_name_plural)

    @property
    def has_personal_data(self) -> bool:
        return any(column.personal for column in self.columns)


_SOURCES: dict[str, ExportSource] = {}


def register_source(source: ExportSource) -> ExportSource:
    """Make ``source`` exportable under ``source.name`` (stored on each job; at most 32 characters)."""
    if len(source.name) > ExportJob._meta.get_field("resource").max_length:
        raise ValueError(f"export source name too long: {source.name}")
    _SOURCES[source.name] = source
    return source


def get_source(name: str) -> ExportSource:
    try:
        return _SOURCES[name]
    except KeyError:
        raise ExportError(gettext("This kind of data can no longer be exported.")) from None


def source_label(name: str) -> str:
    source = _SOURCES.get(name)
    return source.label if source is not None else name


# --------------------------------------------------------------------------------------------------
# Job services


def sees_full_personal_data(user: Any) -> bool:
    return bool(user is not None and user.is_active and user.has_perm(FULL_MOBILE_PERMISSION))


@audit.service
def request_export(
    source: ExportSource, *, params: Mapping[str, Any], file_format: str, actor: Actor
) -> ExportJob:
    """Queue an export of ``source`` for ``actor.user``; the worker starts once this commits.

    Masking is decided now (and re-checked by the worker); the user's language is kept so headers
    and labels come out as they read the page.
    """
    user = actor.user
    if not source.may_export(user):
        raise PermissionDenied
    if file_format not in CONTENT_TYPES:
        raise ValueError(file_format)
    job_params = {
        **params,
        "language": translation.get_language() or settings.LANGUAGE_CODE,
        "full_personal_data": sees_full_personal_data(user),
        "request_id": actor.request_id,
    }
    job = ExportJob.objects.create(
        resource=source.name, params=job_params, file_format=file_format, created_by=user
    )
    audit.record(
        actor,
        "export.requested",
        target=job,
        changes={
            "resource": source.name,
            "format": file_format,
            "filters": params,
            "masked": not job_params["full_personal_data"],
        },
    )
    from .export_tasks import run_export_task  # the task module imports this one

    transaction.on_commit(partial(run_export_task.delay, job.pk))
    return job


@audit.service
def _claim(job_id: int) -> ExportJob | None:
    """Queued (or left running by a lost worker) → running; None when there is nothing to do."""
    claimed = ExportJob.objects.filter(
        pk=job_id, state__in=[ExportJob.State.QUEUED, ExportJob.State.RUNNING]
    ).update(state=ExportJob.State.RUNNING, error="")
    if not claimed:
        return None
    return ExportJob.objects.select_related("created_by").get(pk=job_id)


def run_export(job_id: int) -> ExportJob | None:
    """Write the job's file (the Celery task calls this). Safe to run twice: a finished job is left alone.

    Everything the request decided is checked again against the user as they are now: a user who
    lost the right to export gets nothing, and one who lost the right to see full numbers gets them
    masked. Errors are written in the requester's language, like the file.
    """
    job = _claim(job_id)
    if job is None:
        return None
    with translation.override(job.params.get("language") or settings.LANGUAGE_CODE):
        try:
            source = get_source(job.resource)
        except ExportError as error:  # nothing to retry: the source is gone for good
            fail_export(job.pk, error=str(error))
            return ExportJob.objects.get(pk=job.pk)
        user = job.created_by
        if not source.may_export(user):
            fail_export(job.pk, error=gettext("You are no longer allowed to export this data."))
            return ExportJob.objects.get(pk=job.pk)
        masked = not (job.params.get("full_personal_data") and sees_full_personal_data(user))
        started = time.monotonic()
        queryset = scoped(source.build_queryset(user, job.params), user)
        with tempfile.TemporaryFile() as handle:
            rows = write_queryset(
                handle,
                queryset,
                source.columns,
                file_format=job.file_format,
                masked=masked,
                title=source.label,
            )
            handle.seek(0)
            return _finish(job, handle, rows=rows, masked=masked, seconds=time.monotonic() - started)


@audit.service
def _finish(job: ExportJob, handle: IO[bytes], *, rows: int, masked: bool, seconds: float) -> ExportJob:
    stored = default_storage.save(
        f"exports/{timezone.localdate():%Y/%m}/{job.resource}-{job.pk}.{job.file_format}", File(handle)
    )
    done = ExportJob.objects.filter(pk=job.pk, state=ExportJob.State.RUNNING).update(
        state=ExportJob.State.DONE,
        rows=rows,
        file=stored,
        finished_at=timezone.now(),
        params={**job.params, "masked": masked},  # what the file really shows, for the download check
    )
    if not done:  # another run of the same job finished first (a redelivered message): keep theirs
        default_storage.delete(stored)
        return ExportJob.objects.get(pk=job.pk)
    job.refresh_from_db()
    audit.record(
        _worker_actor(job),
        "export.completed",
        target=job,
        changes={"rows": rows, "masked": masked, "format": job.file_format, "seconds": round(seconds, 1)},
    )
    return job


@audit.service
def fail_export(job_id: int, *, error: str) -> None:
    """Mark a queued or running job failed and say why (the task's ``on_failure`` calls this too)."""
    failed = ExportJob.objects.filter(
        pk=job_id, state__in=[ExportJob.State.QUEUED, ExportJob.State.RUNNING]
    ).update(state=ExportJob.State.FAILED, error=error[:500], finished_at=timezone.now())
    if failed:
        job = ExportJob.objects.get(pk=job_id)
        audit.record(_worker_actor(job), "export.failed", target=job, changes={"error": error[:500]})


def _worker_actor(job: ExportJob) -> Actor:
    # The system acts for the requester; the request id ties the events of one export together.
    actor = Actor.system("export")
    request_id = job.params.get("request_id")
    return dataclasses.replace(actor, request_id=request_id) if request_id else actor


def may_download(user: Any, job: ExportJob) -> bool:
    """The requester while they may still export (and see what the file shows), or an HQ administrator."""
    if job.state != ExportJob.State.DONE or not job.file or user is None or not user.is_active:
        return False
    if role_of(user) == Role.HQ_ADMIN:
        return True
    if job.created_by_id != user.pk:
        return False
    try:
        source = get_source(job.resource)
    except ExportError:
        return False
    unmasked = job.params.get("masked") is False
    return source.may_export(user) and (not unmasked or sees_full_personal_data(user))


@audit.service
def record_download(job: ExportJob, *, actor: Actor) -> None:
    if not may_download(actor.user, job):
        raise PermissionDenied
    audit.record(
        actor,
        "export.downloaded",
        target=job,
        changes={
            "rows": job.rows,
            "masked": job.params.get("masked", True),
            "requested_by": job.created_by_id,
        },
    )


def download_name(job: ExportJob) -> str:
    """``会员-42-2026-11-23.xlsx``: what the data is, in the reader's language."""
    day = timezone.localtime(job.finished_at or job.created_at).date()
    return f"{sheet_title(source_label(job.resource))}-{job.pk}-{day.isoformat()}.{job.file_format}"


# --------------------------------------------------------------------------------------------------
# Selectors


def exports_for(user: Any) -> QuerySet[ExportJob]:
    """The user's own exports; an HQ administrator sees everyone's."""
    jobs = ExportJob.objects.select_related("created_by").order_by("-created_at", "-id")
    if role_of(user) == Role.HQ_ADMIN:
        return jobs
    return jobs.filter(created_by=user)


def delete_old_export_files(*, days: int, now: Any = None) -> int:
    """Delete the files of finished exports created more than ``days`` ago; the job rows stay.

    Queued and running exports are left alone; a job without its file is no longer offered for
    download (``may_download``).
    """
    import datetime

    now = now or timezone.now()
    old = ExportJob.objects.filter(
        created_at__lt=now - datetime.timedelta(days=days),
        state__in=[ExportJob.State.DONE, ExportJob.State.FAILED],
    ).exclude(file="")
    deleted = 0
    for job in old.iterator():
        job.file.delete(save=False)
        ExportJob.objects.filter(pk=job.pk).update(file="")
        deleted += 1
    return deleted
