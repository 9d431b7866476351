"""HQ import pages in the admin's look: choose data and upload → check (progress) → preview → confirm.

Thin: every step calls a service in scrm.imports; the work runs in Celery (scrm.tasks) and the pages
poll a small JSON endpoint for progress. Rights are per kind of data (the model's add and change
permissions), not "any admin user".
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from . import imports
from .audit import Actor
from .models import ImportJob

app_name = "imports"

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class UploadForm(forms.Form):
    resource = forms.ChoiceField(label=gettext_lazy("Data"))
    file = forms.FileField(
        label=gettext_lazy("File"),
        widget=forms.ClearableFileInput(attrs={"accept": ".xlsx,.csv"}),
    )

    def __init__(self, *args: Any, importers: list[type[imports.Importer]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["resource"].choices = [(i.name, i.verbose_name) for i in importers]


def _allowed_importers(request: HttpRequest) -> list[type[imports.Importer]]:
    allowed = imports.importers_for(request.user)
    if not allowed:
        raise PermissionDenied
    return allowed


def _visible_jobs(request: HttpRequest) -> QuerySet[ImportJob]:
    names = [i.name for i in imports.importers_for(request.user)]
    return ImportJob.objects.filter(resource__in=names).select_related("created_by")


def _job_for(request: HttpRequest, pk: int) -> ImportJob:
    job = get_object_or_404(ImportJob.objects.select_related("created_by"), pk=pk)
    importer = imports.importers().get(job.resource)
    if importer is None or not importer.allowed(request.user):
        raise Http404
    return job


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), **extra}


@login_required
def index(request: HttpRequest) -> HttpResponse:
    allowed = _allowed_importers(request)
    form = UploadForm(importers=allowed, initial={"resource": request.GET.get("resource")})
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES, importers=allowed)
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                job = imports.create_import_job(
                    resource=form.cleaned_data["resource"],
                    upload=upload,
                    file_name=upload.name,
                    actor=Actor.from_request(request),
                )
            except imports.FileRefused as refused:
                form.add_error("file", refused.message)
            except imports.ImportNotAllowed as refused:
                form.add_error("resource", refused.message)
            else:
                return redirect("imports:job", pk=job.pk)
    return render(
        request,
        "admin/imports/index.html",
        _context(
            request,
            title=_("Import from Excel"),
            form=form,
            importers=allowed,
            limits=imports.settings_limits_text(),
            jobs=_visible_jobs(request)[:20],
        ),
    )


@login_required
@require_GET
def template(request: HttpRequest, resource: str) -> HttpResponse:
    importer = imports.importers().get(resource)
    if importer is None or not importer.allowed(request.user):
        raise Http404
    response = HttpResponse(imports.template_workbook(resource), content_type=XLSX)
    filename = _("%(what)s-template") % {"what": importer.verbose_name}
    response["Content-Disposition"] = content_disposition_header(True, f"{filename}.xlsx")
    return response


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_for(request, pk)
    importer = imports.importers()[job.resource]
    problems = job.counts.get("errors", []) if job.counts else []
    return render(
        request,
        "admin/imports/job.html",
        _context(
            request,
            title=_("Import: %(file)s") % {"file": job.original_name},
            job=job,
            importer=importer,
            progress=imports.job_progress(job),
            problems=problems,
            more_problems=max(0, job.counts.get("invalid", 0) - len(problems)) if job.counts else 0,
            running=job.state
            in (ImportJob.State.UPLOADED, ImportJob.State.VALIDATING, ImportJob.State.IMPORTING),
            can_confirm=job.state == ImportJob.State.VALIDATED,
        ),
    )


@login_required
@require_GET
def job_progress(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse(imports.job_progress(_job_for(request, pk)))


@login_required
@require_POST
def job_confirm(request: HttpRequest, pk: int) -> HttpResponse:
    job = _job_for(request, pk)
    try:
        imports.confirm_import_job(job, actor=Actor.from_request(request))
    except (imports.JobNotConfirmable, imports.ImportNotAllowed) as refused:
        messages.error(request, refused.message)
    return redirect("imports:job", pk=job.pk)


@login_required
@require_GET
def job_errors(request: HttpRequest, pk: int) -> FileResponse:
    job = _job_for(request, pk)
    if not job.error_file:
        raise Http404
    return FileResponse(
        job.error_file.open("rb"),
        as_attachment=True,
        filename=job.error_file.name.rsplit("/", 1)[-1],
        content_type=XLSX,
    )


urlpatterns = [
    path("", index, name="index"),
    path("template/<str:resource>.xlsx", template, name="template"),
    path("<int:pk>/", job_detail, name="job"),
    path("<int:pk>/progress/", job_progress, name="progress"),
    path("<int:pk>/confirm/", job_confirm, name="confirm"),
    path("<int:pk>/errors/", job_errors, name="errors"),
]
