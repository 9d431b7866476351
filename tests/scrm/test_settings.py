import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_language_and_time_zone_defaults():
    assert settings.LANGUAGE_CODE == "zh-hans"
    assert settings.TIME_ZONE == "Asia/Shanghai"
    assert settings.USE_TZ is True
    assert [code for code, _ in settings.LANGUAGES] == ["zh-hans", "en"]


def test_production_profile_passes_the_deploy_check_with_real_values():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "scrm.settings.production",
        "DJANGO_SECRET_KEY": "x7#" + "q" * 30 + "long-random-production-secret-Z9!",
        "DJANGO_ALLOWED_HOSTS": "scrm.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_profile_refuses_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="scrm.settings.production", DJANGO_ALLOWED_HOSTS="scrm.example.com")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_collectstatic_with_the_production_storage_finds_every_referenced_file(tmp_path, settings):
    # The manifest storage refuses a CSS/JS reference to a file that is not shipped (a vendored
    # library's source map, say); `make demo` and deployments run collectstatic, the tests do not.
    from django.core.management import call_command

    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    call_command("collectstatic", interactive=False, verbosity=0)

    assert (tmp_path / "staticfiles.json").exists()


def test_every_beat_entry_names_a_task_the_worker_registers():
    # A task moved or renamed without its beat entry would be scheduled forever and never run.
    from scrm.celery import app

    app.loader.import_default_modules()
    unknown = [entry["task"] for entry in app.conf.beat_schedule.values() if entry["task"] not in app.tasks]

    assert app.conf.beat_schedule and unknown == []
