"""Safe, fast spreadsheet reading: bad files are refused before parsing; good files read exactly."""

import datetime
import struct
import zipfile

import openpyxl
import pytest
from python_calamine import CalamineWorkbook

from scrm import excel
from scrm.excel import FileRefused, iter_row_batches, open_sheet
from tests.data import rewrite_xlsx, write_csv, write_xlsx

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


def read_all(path, **kwargs):
    sheet = open_sheet(path, **kwargs)
    return [
        (first + offset, row) for first, rows in iter_row_batches(sheet) for offset, row in enumerate(rows)
    ]


def refused(path, **kwargs) -> FileRefused:
    with pytest.raises(FileRefused) as caught:
        read_all(path, **kwargs)
    return caught.value


@pytest.fixture
def members_xlsx(tmp_path):
    return write_xlsx(
        tmp_path / "members.xlsx",
        [
            ["手机号", "姓名", "生日", "积分"],
            ["13812345678", "林晓", datetime.date(1990, 1, 2), 12],
            [13912345678, "陈静怡", datetime.date(1985, 12, 31), 3.5],
            ["", "", "", ""],
            ["15012345678", "", "", ""],
        ],
    )


# --------------------------------------------------------------------------------------------------
# Reading


def test_an_xlsx_reads_row_numbers_and_typed_cells(members_xlsx):
    rows = read_all(members_xlsx)

    assert rows == [
        (1, ["手机号", "姓名", "生日", "积分"]),
        (2, ["13812345678", "林晓", datetime.date(1990, 1, 2), 12.0]),
        (3, [13912345678.0, "陈静怡", datetime.date(1985, 12, 31), 3.5]),
        (4, ["", "", "", ""]),
        (5, ["15012345678", "", "", ""]),
    ]


def test_slices_of_a_big_sheet_read_exactly_as_the_whole_sheet(tmp_path, monkeypatch):
    # given a sheet with shared strings (openpyxl writes them, as Excel does), cut into many slices
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["手机号", "姓名", "生日"])
    for i in range(3000):
        sheet.append([f"138{i:08d}", f"会员{i % 50}", datetime.date(1990, 1, 1) + datetime.timedelta(days=i)])
    path = tmp_path / "shared.xlsx"
    book.save(path)
    monkeypatch.setattr(excel, "SLICE_BYTES", 8 * 1024)
    monkeypatch.setattr(excel, "READ_BYTES", 4 * 1024)

    # when it is read in slices
    batches = list(iter_row_batches(open_sheet(path)))

    # then there were many slices and the rows equal calamine's reading of the whole file
    whole = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert len(batches) > 10
    assert [row for _first, rows in batches for row in rows] == whole
    assert [first for first, _rows in batches][:2] == [1, 1 + len(batches[0][1])]


def test_rows_without_references_prefixed_tags_and_a_leading_empty_column_keep_their_places(tmp_path):
    # given a sheet written by a generator that omits r="…" and uses a namespace prefix,
    # with its data starting in column B after an empty first row
    source = write_xlsx(tmp_path / "plain.xlsx", [["x"]])
    ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rows = "".join(
        f'<x:row><x:c t="inlineStr"><x:is><x:t></x:t></x:is></x:c><x:c t="inlineStr"><x:is><x:t>{v}</x:t>'
        f"</x:is></x:c></x:row>"
        for v in ("h", "a", "b")
    )
    sheet_xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><x:worksheet xmlns:x="{ns}"><x:sheetData>'
        f"<x:row/>{rows}</x:sheetData></x:worksheet>"
    ).encode()
    path = rewrite_xlsx(source, tmp_path / "prefixed.xlsx", {"xl/worksheets/sheet1.xml": sheet_xml})

    # when it is read, then values sit in column B (index 1) and rows count from the file's start
    assert [row[1] for _n, row in read_all(path)] == ["h", "a", "b"]


def test_a_csv_reads_utf8_with_bom_and_gb18030(tmp_path):
    rows = [["手机号", "姓名"], ["13812345678", "林晓"]]
    utf8 = write_csv(tmp_path / "utf8.csv", rows)
    gbk = write_csv(tmp_path / "gbk.csv", rows, encoding="gb18030")

    assert read_all(utf8) == [(1, rows[0]), (2, rows[1])]
    assert read_all(gbk) == [(1, rows[0]), (2, rows[1])]
    assert open_sheet(gbk).encoding == "gb18030"


# --------------------------------------------------------------------------------------------------
# The bad-file catalogue


def test_a_png_renamed_to_xlsx_is_refused(tmp_path):
    path = tmp_path / "photo.xlsx"
    path.write_bytes(PNG * 10)

    error = refused(path)

    assert error.code == "wrong_type"
    assert "not an Excel workbook" in error.message


def test_a_png_renamed_to_csv_is_refused(tmp_path):
    path = tmp_path / "photo.csv"
    path.write_bytes(PNG * 10)

    assert refused(path).code == "wrong_type"


@pytest.mark.parametrize("name", ["members.xls", "members.txt", "members.xlsx.exe", "members"])
def test_other_file_types_are_refused_by_name(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"mobile\n13812345678\n")

    assert refused(path).code == "wrong_type"


def test_a_zip_that_is_not_a_workbook_is_refused(tmp_path):
    path = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")

    assert refused(path).code == "wrong_type"


def test_a_truncated_workbook_is_refused(tmp_path, members_xlsx):
    data = members_xlsx.read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(data[: len(data) // 2])

    assert refused(path).code == "wrong_type"


def test_a_macro_workbook_is_refused(tmp_path, members_xlsx):
    with zipfile.ZipFile(members_xlsx) as archive:
        types = (
            archive.read("[Content_Types].xml")
            .replace(b"spreadsheetml.sheet.main+xml", b"MACRO")
            .replace(
                b"application/vnd.openxmlformats-officedocument.MACRO",
                b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
            )
        )
    path = rewrite_xlsx(members_xlsx, tmp_path / "macro.xlsx", {"[Content_Types].xml": types})

    error = refused(path)

    assert (error.code, "macros" in error.message) == ("wrong_type", True)


def test_a_highly_compressible_member_is_a_zip_bomb(tmp_path, members_xlsx):
    # 30 MB of blanks inside the sheet compress about 1000:1
    bomb = (
        b'<?xml version="1.0"?><worksheet xmlns="x"><sheetData>'
        + b" " * 30_000_000
        + b"</sheetData></worksheet>"
    )
    path = rewrite_xlsx(members_xlsx, tmp_path / "bomb.xlsx", {"xl/worksheets/sheet1.xml": bomb})
    assert path.stat().st_size < 200_000

    error = refused(path)

    assert error.code == "zip_bomb"
    assert "zip bomb" in error.message


def test_a_huge_declared_size_is_a_zip_bomb(tmp_path, members_xlsx):
    # given a small workbook whose central directory claims the sheet unpacks to 4 GB
    data = bytearray(members_xlsx.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_length]) == name:
            struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
        at = data.find(b"PK\x01\x02", at + 4)
    path = tmp_path / "declared.xlsx"
    path.write_bytes(bytes(data))

    assert refused(path).code == "zip_bomb"


def test_the_total_unpacked_size_is_limited(tmp_path, members_xlsx, settings):
    settings.SCRM_IMPORT_MAX_UNPACKED_BYTES = 2_000

    assert refused(members_xlsx).code == "zip_bomb"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE sst [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1">
<si><t>&lol3;</t></si></sst>"""


def test_entity_expansion_in_shared_strings_is_refused(tmp_path):
    book = openpyxl.Workbook()
    book.active.append(["手机号"])
    book.active.append(["13812345678"])
    source = tmp_path / "shared.xlsx"
    book.save(source)
    path = rewrite_xlsx(source, tmp_path / "laughs.xlsx", {"xl/sharedStrings.xml": BILLION_LAUGHS})

    error = refused(path)

    assert error.code == "xml_attack"
    assert "attack" in error.message


def test_an_external_entity_in_the_sheet_is_refused(tmp_path, members_xlsx):
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE worksheet [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        b'<row r="1"><c r="A1" t="inlineStr"><is><t>&x;</t></is></c></row></sheetData></worksheet>'
    )
    path = rewrite_xlsx(members_xlsx, tmp_path / "xxe.xlsx", {"xl/worksheets/sheet1.xml": xxe})

    assert refused(path).code == "xml_attack"


def test_a_file_over_the_size_limit_is_refused(members_xlsx, settings):
    settings.SCRM_IMPORT_MAX_BYTES = 1_000

    error = refused(members_xlsx)

    assert error.code == "too_big"
    assert "limit" in error.message


@pytest.mark.parametrize("kind", ["xlsx", "csv"])
def test_a_file_over_the_row_limit_is_refused(tmp_path, settings, kind):
    settings.SCRM_IMPORT_MAX_ROWS = 3
    rows = [["手机号"]] + [[f"1381234567{i}"] for i in range(4)]
    path = (write_xlsx if kind == "xlsx" else write_csv)(tmp_path / f"rows.{kind}", rows)

    assert refused(path).code == "too_many_rows"


def test_the_row_limit_holds_while_reading_when_the_sheet_does_not_declare_its_size(
    tmp_path, settings, members_xlsx
):
    settings.SCRM_IMPORT_MAX_ROWS = 2
    sheet = open_sheet(members_xlsx, limits=excel.Limits(10**9, 100, 10**10, 200))
    sheet.limits = excel.Limits.from_settings()

    with pytest.raises(FileRefused) as caught:
        list(iter_row_batches(sheet))

    assert caught.value.code == "too_many_rows"


def test_a_csv_in_neither_encoding_is_refused(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"mobile,name\n13812345678,\xff\xfe\xff\n")

    assert refused(path).code == "wrong_encoding"


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    assert refused(path).code == "empty"


@pytest.fixture(autouse=True)
def _english_messages():
    """The assertions read the English source messages; the catalogue has the Chinese ones."""
    from django.utils import translation

    with translation.override("en"):
        yield
