"""HQ pages for background exports: "my exports" (state, rows, a download link) and the download.

Mounted under ``/admin/exports/`` (one ``include`` in ``scrm.urls``), so the admin's login, look and
HQ-only fence apply. Views stay thin: reads and checks live in ``scrm.exports``.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext
from django.views.decorators.http import require_GET

from .audit import Actor
from .exports import CONTENT_TYPES, download_name, exports_for, may_download, record_download, source_label
from .models import ExportJob
from .roles import Role, role_of

app_name = "exports"

# The newest jobs only: the page is a to-do list of files to fetch, not an archive.
LIST_LIMIT = 50
# While a job is queued or running, the page reloads itself this often (seconds).
REFRESH_SECONDS = 5


@require_GET
def export_list(request: HttpRequest) -> HttpResponse:
    jobs = list(exports_for(request.user)[:LIST_LIMIT])
    rows = [
        {
            "job": job,
            "label": source_label(job.resource),
            "can_download": may_download(request.user, job),
        }
        for job in jobs
    ]
    pending = any(job.state in (ExportJob.State.QUEUED, ExportJob.State.RUNNING) for job in jobs)
    context = {
        **admin.site.each_context(request),
        "title": gettext("My exports"),
        "rows": rows,
        "shows_everyone": role_of(request.user) == Role.HQ_ADMIN,
        "refresh_seconds": REFRESH_SECONDS if pending else None,
    }
    return TemplateResponse(request, "admin/exports/export_list.html", context)


@require_GET
def export_download(request: HttpRequest, pk: int) -> FileResponse:
    job = get_object_or_404(ExportJob, pk=pk)
    if not may_download(request.user, job):
        raise PermissionDenied
    record_download(job, actor=Actor.from_request(request))
    return FileResponse(
        job.file.open("rb"),
        as_attachment=True,
        filename=download_name(job),
        content_type=CONTENT_TYPES[job.file_format],
    )


urlpatterns = [
    path("", admin.site.admin_view(export_list), name="list"),
    path("<int:pk>/download/", admin.site.admin_view(export_download), name="download"),
]
