"""Reading uploaded spreadsheets: safely first, then fast and in bounded memory.

Safety (``open_sheet``), before any cell is parsed:

- only .xlsx and .csv, recognised by content, not by name: an xlsx is a zip holding
  ``[Content_Types].xml`` that declares a spreadsheet workbook (macro workbooks are refused); a csv must
  decode as UTF-8 (with or without BOM) or GB18030 and contain no binary;
- a size limit and a row limit (``SCRM_IMPORT_MAX_BYTES``, ``SCRM_IMPORT_MAX_ROWS``);
- zip bombs: every zip entry's declared unpacked size and compression ratio are checked, and reading
  never goes past the declared size;
- XML bombs: every XML part's prolog goes through defusedxml with DTDs forbidden (entity expansion
  needs a DTD, and a DTD can only appear before the root element).

Speed and memory (``iter_row_batches``): python-calamine parses xlsx in Rust about 8× faster than
openpyxl, but holds the whole sheet (about 0.95 GB for 1M rows). So the worksheet XML is streamed out
of the zip, cut on row boundaries into slices of about ``SLICE_BYTES``, and each slice is handed to
calamine as a small workbook of its own (same styles and shared strings, so dates and strings read
exactly as in the whole file). Memory stays at one slice; speed stays calamine's.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException
from django.conf import settings
from django.utils.translation import gettext as _
from python_calamine import CalamineError, CalamineWorkbook

Batch = tuple[int, list[list[Any]]]  # (number of the first row, 1-based as Excel shows it; rows)

XLSX_MAGIC = b"PK\x03\x04"
WORKBOOK_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
MACRO_WORKBOOK_TYPES = (
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    "application/vnd.ms-excel.template.macroEnabled.main+xml",
)
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"

# Slices of worksheet XML handed to calamine: about 40-70k rows, ~60 MB of parsed cells at most.
SLICE_BYTES = 24 * 1024 * 1024
READ_BYTES = 4 * 1024 * 1024
CSV_BATCH_ROWS = 50_000
# Small parts (workbook, relationships, styles) are parsed whole; nothing legitimate is bigger.
SMALL_PART_LIMIT = 16 * 1024 * 1024
# Compression ratio past which a part counts as a zip bomb (worksheet XML reaches 10-40×, bombs ~1000×).
# Tiny parts compress oddly well, so the ratio is only checked past RATIO_FLOOR bytes.
RATIO_FLOOR = 1024 * 1024
MAX_ZIP_ENTRIES = 10_000


class FileRefused(Exception):
    """The file is refused as a whole; ``message`` is translated and says why."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_rows: int
    max_unpacked_bytes: int
    max_ratio: int

    @classmethod
    def from_settings(cls) -> Limits:
        max_bytes = getattr(settings, "SCRM_IMPORT_MAX_BYTES", 100 * 1024 * 1024)
        return cls(
            max_bytes=max_bytes,
            max_rows=getattr(settings, "SCRM_IMPORT_MAX_ROWS", 1_000_000),
            max_unpacked_bytes=getattr(settings, "SCRM_IMPORT_MAX_UNPACKED_BYTES", 30 * max_bytes),
            max_ratio=getattr(settings, "SCRM_IMPORT_MAX_RATIO", 200),
        )


@dataclass
class Sheet:
    """An uploaded file that passed every check, ready to be read."""

    path: Path
    kind: str  # "xlsx" | "csv"
    rows_estimate: int | None = None
    limits: Limits = field(default_factory=Limits.from_settings)
    # xlsx
    sheet_part: str = ""
    shared_strings_part: str = ""
    styles_part: str = ""
    date1904: bool = False
    # csv
    encoding: str = "utf-8-sig"
    delimiter: str = ","


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"


def open_sheet(path: str | Path, *, name: str | None = None, limits: Limits | None = None) -> Sheet:
    """Check ``path`` (originally called ``name``) and return how to read it; ``FileRefused`` if unsafe."""
    path = Path(path)
    limits = limits or Limits.from_settings()
    name = (name or path.name).lower()
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise FileRefused(
            _("The file is %(size)s; the limit is %(limit)s. Split it into smaller files.")
            % {"size": _human_size(size), "limit": _human_size(limits.max_bytes)},
            code="too_big",
        )
    if size == 0:
        raise FileRefused(_("The file is empty."), code="empty")
    with path.open("rb") as handle:
        head = handle.read(8)
    if name.endswith(".xlsx"):
        if not head.startswith(XLSX_MAGIC):
            raise FileRefused(
                _("The file is named .xlsx but is not an Excel workbook. Save it from Excel as .xlsx."),
                code="wrong_type",
            )
        return _open_xlsx(path, limits)
    if name.endswith(".csv"):
        if head.startswith(XLSX_MAGIC):
            raise FileRefused(
                _("The file is named .csv but is an Excel workbook. Rename it to .xlsx."), code="wrong_type"
            )
        return _open_csv(path, limits)
    raise FileRefused(_("Only .xlsx and .csv files can be imported."), code="wrong_type")


# --------------------------------------------------------------------------------------------------
# xlsx: package checks


def _refuse_not_workbook() -> FileRefused:
    return FileRefused(
        _("The file is not a valid Excel workbook (.xlsx). Save it from Excel as .xlsx and try again."),
        code="wrong_type",
    )


def _refuse_xml_attack() -> FileRefused:
    return FileRefused(
        _("The workbook contains XML declarations that are not allowed (a known attack); it was refused."),
        code="xml_attack",
    )


def _check_prolog(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Parse the part until its root element opens: a DTD (needed for entity tricks) is refused."""

    class _RootSeen(Exception):
        pass

    class _Target:
        def start(self, tag: str, attrib: dict[str, str]) -> None:
            raise _RootSeen

        def close(self) -> None:
            return None

    parser = DefusedET.DefusedXMLParser(target=_Target(), forbid_dtd=True)
    try:
        with zf.open(info) as part:
            while chunk := part.read(64 * 1024):
                parser.feed(chunk)
        parser.close()
    except _RootSeen:
        return
    except DefusedXmlException:
        raise _refuse_xml_attack() from None
    except (DefusedET.ParseError, zipfile.BadZipFile, EOFError, OSError, ValueError):
        raise _refuse_not_workbook() from None


def _read_small(zf: zipfile.ZipFile, name: str) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _refuse_not_workbook() from None
    if info.file_size > SMALL_PART_LIMIT:
        raise _refuse_not_workbook()
    return zf.read(info)


def _parse_small(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        return DefusedET.fromstring(_read_small(zf, name), forbid_dtd=True)
    except DefusedXmlException:
        raise _refuse_xml_attack() from None
    except DefusedET.ParseError:
        raise _refuse_not_workbook() from None


def _relationships(zf: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """``{rId: (type, resolved part name)}`` for ``part``'s relationships file."""
    folder, base = posixpath.split(part)
    rels_name = posixpath.join(folder, "_rels", base + ".rels")
    if rels_name not in zf.NameToInfo:
        return {}
    out = {}
    for rel in _parse_small(zf, rels_name).iter(f"{{{PKG_REL_NS}}}Relationship"):
        if rel.get("TargetMode") == "External":
            continue
        target = rel.get("Target", "")
        resolved = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
        out[rel.get("Id", "")] = (rel.get("Type", ""), posixpath.normpath(resolved))
    return out


def _open_xlsx(path: Path, limits: Limits) -> Sheet:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise _refuse_not_workbook() from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES or "[Content_Types].xml" not in zf.NameToInfo:
            raise _refuse_not_workbook()
        unpacked = 0
        for info in infos:
            unpacked += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > RATIO_FLOOR and ratio > limits.max_ratio:
                raise FileRefused(
                    _(
                        "The workbook unpacks to far more data than its size suggests (a “zip bomb”); "
                        "it was refused."
                    ),
                    code="zip_bomb",
                )
            if info.flag_bits & 0x1:
                raise FileRefused(
                    _("The workbook is password-protected. Remove the password and try again."),
                    code="encrypted",
                )
        if unpacked > limits.max_unpacked_bytes:
            raise FileRefused(
                _(
                    "The workbook unpacks to %(size)s, more than the %(limit)s allowed (a “zip bomb” "
                    "or a far too large sheet); it was refused."
                )
                % {"size": _human_size(unpacked), "limit": _human_size(limits.max_unpacked_bytes)},
                code="zip_bomb",
            )
        for info in infos:
            if info.filename.endswith((".xml", ".rels")):
                _check_prolog(zf, info)

        types = _parse_small(zf, "[Content_Types].xml")
        workbook_part = ""
        for override in types.iter():
            content_type = override.get("ContentType", "")
            if content_type in MACRO_WORKBOOK_TYPES:
                raise FileRefused(
                    _("Workbooks with macros (.xlsm) cannot be imported. Save it as .xlsx."),
                    code="wrong_type",
                )
            if content_type == WORKBOOK_TYPE:
                workbook_part = override.get("PartName", "").lstrip("/")
        if not workbook_part or workbook_part not in zf.NameToInfo:
            raise _refuse_not_workbook()

        rels = _relationships(zf, workbook_part)
        workbook = _parse_small(zf, workbook_part)
        ns = workbook.tag[: workbook.tag.index("}") + 1] if workbook.tag.startswith("{") else ""
        props = workbook.find(f"{ns}workbookPr")
        date1904 = props is not None and props.get("date1904", "").lower() in ("1", "true")
        sheet_part = ""
        for sheet in workbook.iter(f"{ns}sheet"):
            rel = rels.get(sheet.get(f"{{{REL_NS}}}id", ""))
            if rel and rel[0].endswith("/worksheet") and rel[1] in zf.NameToInfo:
                sheet_part = rel[1]
                break
        if not sheet_part:
            raise FileRefused(_("The workbook has no worksheet to import."), code="no_sheet")
        shared = next((p for t, p in rels.values() if t.endswith("/sharedStrings")), "")
        styles = next((p for t, p in rels.values() if t.endswith("/styles")), "")
        sheet = Sheet(
            path=path,
            kind="xlsx",
            limits=limits,
            sheet_part=sheet_part,
            shared_strings_part=shared if shared in zf.NameToInfo else "",
            styles_part=styles if styles in zf.NameToInfo else "",
            date1904=date1904,
        )
        sheet.rows_estimate = _xlsx_row_estimate(zf, sheet_part)
    if sheet.rows_estimate is not None and sheet.rows_estimate - 1 > limits.max_rows:
        raise _refuse_too_many_rows(limits)
    return sheet


def _refuse_too_many_rows(limits: Limits) -> FileRefused:
    return FileRefused(
        _("The file has more than %(limit)s rows. Split it into smaller files.")
        % {"limit": f"{limits.max_rows:,}"},
        code="too_many_rows",
    )


_DIMENSION = re.compile(rb"<(?:\w+:)?dimension\s+ref=\"[A-Z]+\d+(?::[A-Z]+(\d+))?\"")


def _xlsx_row_estimate(zf: zipfile.ZipFile, sheet_part: str) -> int:
    """Rows in the sheet: the declared dimension if present, else counted (for the progress bar)."""
    with zf.open(sheet_part) as part:
        head = part.read(64 * 1024)
        match = _DIMENSION.search(head)
        if match:
            return int(match.group(1) or 1)
        # Closing row tags, plain or prefixed (</x:row>); the 4-byte tail catches a tag cut in two.
        rows, tail = 0, b""
        data = head
        while data:
            window = tail + data
            rows += window.count(b"</row>") + window.count(b":row>")
            tail = window[-4:]
            data = part.read(READ_BYTES)
    return rows


# --------------------------------------------------------------------------------------------------
# xlsx: reading in slices


_SHEET_DATA = re.compile(rb"<((?:\w+:)?)sheetData\b[^>]*?(/?)>")
_DIMENSION_TAG = re.compile(rb"<(?:\w+:)?dimension\b[^>]*/>")

_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/xl/workbook.xml" ContentType="' + WORKBOOK_TYPE.encode() + b'"/>'
    b'<Override PartName="/xl/worksheets/sheet1.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    b'<Override PartName="/xl/styles.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    b'<Override PartName="/xl/sharedStrings.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
    b"</Types>"
)
_ROOT_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    b'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    b'Target="worksheets/sheet1.xml"/>'
    b'<Relationship Id="rId2" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" '
    b'Target="styles.xml"/>'
    b'<Relationship Id="rId3" '
    b'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
    b'Target="sharedStrings.xml"/></Relationships>'
)
_EMPTY_SST = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="0" uniqueCount="0"/>'
)
_EMPTY_STYLES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"/>'
)


def _workbook_xml(date1904: bool) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        + (b'<workbookPr date1904="1"/>' if date1904 else b"")
        + b'<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
    )


class _SliceBuilder:
    """Wraps a slice of rows into a one-sheet workbook calamine can open (stored, not compressed)."""

    def __init__(self, zf: zipfile.ZipFile, sheet: Sheet, prefix: bytes, suffix: bytes) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.shared = zf.read(sheet.shared_strings_part) if sheet.shared_strings_part else _EMPTY_SST
        self.styles = zf.read(sheet.styles_part) if sheet.styles_part else _EMPTY_STYLES
        self.workbook = _workbook_xml(sheet.date1904)

    def build(self, rows_xml: bytes) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
            out.writestr("[Content_Types].xml", _CONTENT_TYPES)
            out.writestr("_rels/.rels", _ROOT_RELS)
            out.writestr("xl/workbook.xml", self.workbook)
            out.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
            out.writestr("xl/styles.xml", self.styles)
            out.writestr("xl/sharedStrings.xml", self.shared)
            out.writestr("xl/worksheets/sheet1.xml", b"".join((self.prefix, rows_xml, self.suffix)))
        return buffer.getvalue()


def _xml_slices(part: Any, first: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """Yield ``(prefix, rows_xml, suffix)``: the worksheet cut on ``</row>`` boundaries."""
    buffer = first
    while True:
        match = _SHEET_DATA.search(buffer)
        if match or len(buffer) > SMALL_PART_LIMIT:
            break
        chunk = part.read(READ_BYTES)
        if not chunk:
            break
        buffer += chunk
    if not match:
        raise _refuse_not_workbook()
    ns, self_closing = match.group(1), match.group(2)
    prefix = _DIMENSION_TAG.sub(b"", buffer[: match.end()])
    if self_closing:
        prefix = prefix[:-2] + b">"
        yield prefix, b"", b"</" + ns + b"sheetData></" + ns + b"worksheet>"
        return
    suffix = b"</" + ns + b"sheetData></" + ns + b"worksheet>"
    row_end = b"</" + ns + b"row>"
    data_end = b"</" + ns + b"sheetData>"
    chunk = buffer[match.end() :]
    pending, size, tail = [chunk], len(chunk), b""
    while True:
        # Look for the end of the data in the new bytes only (plus a tag's length before them).
        if data_end in tail + chunk:
            data = b"".join(pending)
            yield prefix, data[: data.rfind(data_end)], suffix
            return
        if size >= SLICE_BYTES:
            data = b"".join(pending)
            cut = data.rfind(row_end)
            if cut >= 0:
                cut += len(row_end)
                yield prefix, data[:cut], suffix
                data = data[cut:]
            pending, size = [data], len(data)
        tail = chunk[-len(data_end) :]
        chunk = part.read(READ_BYTES)
        if not chunk:
            raise _refuse_not_workbook()  # the sheet ends without closing its data: truncated file
        pending.append(chunk)
        size += len(chunk)


def _xlsx_batches(sheet: Sheet) -> Iterator[Batch]:
    rows_seen = 0
    with zipfile.ZipFile(sheet.path) as zf, zf.open(sheet.sheet_part) as part:
        first = part.read(READ_BYTES)
        builder: _SliceBuilder | None = None
        for prefix, rows_xml, suffix in _xml_slices(part, first):
            if builder is None:
                builder = _SliceBuilder(zf, sheet, prefix, suffix)
            if not rows_xml.strip():
                continue
            # Rows without an r="…" attribute are numbered by calamine from the slice's start.
            numbered = b' r="' in rows_xml[:512] or b" r='" in rows_xml[:512]
            try:
                workbook = CalamineWorkbook.from_filelike(io.BytesIO(builder.build(rows_xml)))
                del rows_xml
                cells = workbook.get_sheet_by_index(0)
                start = cells.start
                # to_python() starts at the first used row and column (iter_rows() would pad from
                # row 0); ``start`` says where that is.
                rows = cells.to_python() if start is not None else []
                workbook.close()
            except CalamineError:
                raise _refuse_not_workbook() from None
            if not rows:
                continue
            if start[1]:
                pad = [""] * start[1]
                rows = [pad + values for values in rows]
            first_row = start[0] + 1 + (0 if numbered else rows_seen)
            rows_seen += len(rows)
            yield first_row, rows


# --------------------------------------------------------------------------------------------------
# csv


def _open_csv(path: Path, limits: Limits) -> Sheet:
    encoding = None
    for candidate in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(candidate)()
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(READ_BYTES):
                    text = decoder.decode(chunk)
                    if "\x00" in text or _mostly_control(text):
                        raise FileRefused(
                            _("The file is named .csv but is not a text file."), code="wrong_type"
                        )
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        encoding = candidate
        break
    if encoding is None:
        raise FileRefused(
            _("The CSV file is neither UTF-8 nor GB18030 text. Save it as “CSV UTF-8” and try again."),
            code="wrong_encoding",
        )
    with path.open("r", encoding=encoding, newline="") as handle:
        head = handle.read(64 * 1024)
        handle.seek(0)
        first_line = head.splitlines()[0] if head else ""
        delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
        rows = sum(1 for _row in csv.reader(handle, delimiter=delimiter))
    if rows - 1 > limits.max_rows:
        raise _refuse_too_many_rows(limits)
    return Sheet(
        path=path, kind="csv", rows_estimate=rows, limits=limits, encoding=encoding, delimiter=delimiter
    )


_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f]")


def _mostly_control(text: str) -> bool:
    return len(_CONTROL.findall(text[:65536])) > max(8, len(text[:65536]) // 100)


def _csv_batches(sheet: Sheet) -> Iterator[Batch]:
    with sheet.path.open("r", encoding=sheet.encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=sheet.delimiter)
        first_row = 1
        while rows := list(itertools.islice(reader, CSV_BATCH_ROWS)):
            yield first_row, rows
            first_row += len(rows)


def iter_row_batches(sheet: Sheet) -> Iterator[Batch]:
    """Every row of the first worksheet (or the csv), in batches of consecutive rows.

    A batch is ``(number of its first row as Excel shows it, 1-based; list of rows)``, a row a list of
    cell values.

    Values are what the cell holds: str, int, float, bool, date, datetime, time; an empty cell is ``""``
    (csv cells are always str). Past the row limit, ``FileRefused`` is raised.
    """
    batches = _xlsx_batches(sheet) if sheet.kind == "xlsx" else _csv_batches(sheet)
    limit = sheet.limits.max_rows + 1  # the header row does not count
    seen = 0
    for batch in batches:
        seen += len(batch[1])
        if seen > limit:
            raise _refuse_too_many_rows(sheet.limits)
        yield batch
