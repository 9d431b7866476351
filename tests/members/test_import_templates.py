"""Every importer's template reads back: its header row binds in Chinese and English."""

import io

import openpyxl
import pytest
from django.utils import translation

from scrm.audit import Actor
from scrm.imports import ImportContext, importers, template_workbook


@pytest.mark.parametrize("language", ["en", "zh-hans"])
@pytest.mark.parametrize("resource", ["orders", "member_tags", "points", "consent"])
def test_the_template_header_binds(resource, language):
    assert resource in importers()
    with translation.override(language):
        sheet = openpyxl.load_workbook(io.BytesIO(template_workbook(resource))).active
    headers = [cell.value for cell in sheet[1]]
    example = [cell.value for cell in sheet[2]]
    importer = importers()[resource](
        ImportContext(actor=Actor.system("tests"), now=None, sha256="", file_name="", dry_run=True)
    )

    importer.bind(headers)

    assert set(importer.index) == {column.key for column in importer.columns}
    assert any(value not in (None, "") for value in example)
    if resource in ("orders", "consent"):
        assert sheet.data_validations.dataValidation  # drop-downs for the coded columns
