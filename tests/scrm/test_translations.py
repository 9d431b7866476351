"""Chinese is the default language: every string the project marks for translation has a translation."""

import gettext
import shutil
import subprocess
import sys
from pathlib import Path

import polib
import pytest
from django.utils import translation

ROOT = Path(__file__).resolve().parent.parent.parent
PO = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")


def test_every_message_in_the_chinese_catalogue_is_translated_and_not_fuzzy():
    catalogue = polib.pofile(str(PO))
    missing = [e.msgid for e in catalogue if not e.obsolete and not e.translated()]
    assert missing == []
    assert len(catalogue.translated_entries()) > 100


def test_the_compiled_catalogue_matches_the_source():
    source = {
        (e.msgctxt, e.msgid): e.msgstr for e in polib.pofile(str(PO)) if e.translated() and not e.msgid_plural
    }
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for (context, msgid), msgstr in source.items():
        got = compiled.pgettext(context, msgid) if context else compiled.gettext(msgid)
        assert got == msgstr, f"{msgid!r}: run `make messages` to recompile"


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="xgettext (gettext) is not installed")
def test_the_catalogue_covers_every_string_in_the_code():
    """Extract afresh and compare: a new string without a translation fails here.

    makemessages writes into locale/ itself, so the catalogue is put back exactly as it was afterwards.
    """
    saved = PO.read_bytes()
    try:
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "makemessages",
                "-l",
                "zh_Hans",
                "--no-obsolete",
                "-v",
                "0",
                "--ignore",
                ".venv/*",
                "--ignore",
                ".local/*",
                "--ignore",
                "bench/*",
                "--ignore",
                "tests/*",
            ],
            cwd=ROOT,
            check=True,
            timeout=300,
        )
        fresh = polib.pofile(str(PO))
    finally:
        PO.write_bytes(saved)
    untranslated = [e.msgid for e in fresh if not e.obsolete and not e.translated()]
    assert untranslated == [], "new strings need translations: run `make messages` and translate them"


def test_a_model_label_reads_in_chinese_by_default_and_in_english_on_request():
    from members.models import Member

    assert str(Member._meta.verbose_name) == "会员"
    with translation.override("en"):
        assert str(Member._meta.verbose_name) == "member"
