"""Building blocks shared by every HQ admin page: fast counts, indexed search, scoping and the audit trail.

Changelists here sit on tables of millions of rows, so three stock behaviours are replaced:

- ``count(*)`` on every page load → ``EstimatedCountPaginator`` (the planner's figure past a threshold);
- ``UPPER(col) LIKE UPPER('%term%')`` over every search field → ``IndexedSearch`` (exact keys and
  prefixes that the indexes answer);
- filter sidebars listing every store → ``input_filter`` (a text box; nothing loaded to draw it).

Every admin write goes through a service or, for plain reference data, through ``ScrmModelAdmin``'s
save/delete hooks, which write the audit event in the same transaction as the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ERROR_FLAG, IS_POPUP_VAR, PAGE_VAR, TO_FIELD_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import Q, QuerySet
from django.forms import BaseForm
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect, QueryDict
from django.urls import URLPattern, path, reverse
from django.utils.html import conditional_escape, format_html
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from . import audit
from .audit import Actor
from .exports import Column, ExportSource, register_source, request_export
from .masking import mask_mobile
from .scoping import scoped

# --------------------------------------------------------------------------------------------------
# Counting


def table_row_estimate(queryset: QuerySet[Any]) -> int:
    """``pg_class.reltuples`` of the queryset's table: -1 when the table was never analysed."""
    connection = connections[queryset.db]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def planner_row_estimate(queryset: QuerySet[Any]) -> int:
    """The planner's row estimate for ``queryset`` (``EXPLAIN``, nothing is executed)."""
    # Ordering and selected columns do not change the row count; dropping them keeps planning cheap.
    query = queryset.order_by().values("pk").query
    sql, params = query.get_compiler(using=queryset.db).as_sql()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _is_unfiltered(queryset: QuerySet[Any]) -> bool:
    query = queryset.query
    return (
        not query.where
        and not query.distinct
        and not query.combinator
        and query.low_mark == 0
        and query.high_mark is None
        and not query.group_by
    )


class EstimatedCountPaginator(Paginator):
    """A paginator whose count costs nothing on big tables.

    Unfiltered lists read ``pg_class.reltuples``; filtered ones ask the planner (``EXPLAIN``). When the
    estimate is at most ``SCRM_EXACT_COUNT_LIMIT`` rows, the exact ``count(*)`` is cheap enough and
    is used instead, so small tables and narrow filters show exact figures. ``count_is_estimated``
    tells the template to say "about".
    """

    count_is_estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        if queryset.query.is_empty():  # .none(): out of scope, or a search that cannot match
            return 0
        limit = settings.SCRM_EXACT_COUNT_LIMIT
        estimate = table_row_estimate(queryset) if _is_unfiltered(queryset) else -1
        if estimate < 0:  # filtered, or a table never analysed (the planner then guesses from its size)
            estimate = planner_row_estimate(queryset)
        if estimate > limit:
            self.count_is_estimated = True
            return estimate
        return queryset.count()


# --------------------------------------------------------------------------------------------------
# Search


def upper_code(term: str) -> str | None:
    """Codes are one ASCII word stored upper-case (store codes); anything else cannot be one."""
    term = term.strip()
    return term.upper() if term and term.isascii() and term.isprintable() and " " not in term else None


def plain_code(term: str) -> str | None:
    """Like ``upper_code`` for keys stored as typed (employee numbers, order numbers, platform ids)."""
    term = term.strip()
    return term if term and term.isascii() and term.isprintable() and " " not in term else None


def _as_mobile(term: str) -> str | None:
    from members.phones import normalize_mobile  # members depends on scrm, not the other way round

    try:
        return normalize_mobile(term)
    except ValidationError:
        return None


ExactKey = Callable[[str], Q | None]


def key(lookup: str, transform: Callable[[str], Any], **also: Any) -> ExactKey:
    """An exact match of ``lookup`` against ``transform(term)``; ``also`` adds fixed lookups.

    ``also`` lets a lookup use a composite index whose leading column the term does not give:
    ``key("external_no", plain_code, channel__in=Channel.values)`` probes the unique
    (channel, external_no) index once per channel instead of scanning the table.
    """

    def condition(term: str) -> Q | None:
        value = transform(term)
        return Q(**{lookup: value}, **also) if value else None

    return condition


@dataclass(frozen=True)
class IndexedSearch:
    """How a search term becomes lookups the indexes answer; never ``UPPER()`` or ``%term%`` scans.

    - ``mobile``: fields compared with the term normalised to E.164, when it parses as a mobile
      (``138 1234 5678``, ``+86 138-1234-5678`` …); nothing else is tried then.
    - ``exact``: ``key(...)`` conditions tried in order; the first one that matches a row wins (one
      ``LIMIT 1`` probe each). A key whose transform gives nothing for the term is skipped.
    - ``prefix``: fields matched with ``LIKE 'term%'`` (pattern-ops or unique indexes), OR-ed.
    """

    mobile: tuple[str, ...] = ()
    exact: tuple[ExactKey, ...] = ()
    prefix: tuple[str, ...] = ()

    def apply(self, queryset: QuerySet[Any], term: str) -> QuerySet[Any]:
        term = term.strip()
        if not term:
            return queryset
        if self.mobile and (e164 := _as_mobile(term)) is not None:
            return queryset.filter(_any_of({field: e164} for field in self.mobile))
        conditions = [q for condition in self.exact if (q := condition(term)) is not None]
        for index, q in enumerate(conditions):
            candidate = queryset.filter(q)
            if not self.prefix and index == len(conditions) - 1:
                return candidate  # the last resort needs no probe
            if candidate.exists():
                return candidate
        if self.prefix:
            return queryset.filter(_any_of({f"{field}__startswith": term} for field in self.prefix))
        return queryset.none()


def _any_of(conditions: Iterable[dict[str, Any]]) -> Q:
    q = Q()
    for condition in conditions:
        q |= Q(**condition)
    return q


# --------------------------------------------------------------------------------------------------
# Filters


class InputFilter(admin.SimpleListFilter):
    """A sidebar filter drawn as a text box: nothing is queried to draw it, the lookup is indexed."""

    template = "admin/scrm/input_filter.html"
    lookup = ""

    def clean_value(self, value: str) -> Any:
        return value.strip()

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> Sequence[tuple[str, str]]:
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None or not value.strip():
            return queryset
        return queryset.filter(**{self.lookup: self.clean_value(value)})

    def choices(self, changelist: Any) -> Iterable[dict[str, Any]]:
        yield {
            "selected": bool(self.value()),
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            # The other filters, the search and the ordering survive a submit of this box.
            "hidden": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }


def input_filter(
    title: Any, parameter_name: str, lookup: str, *, clean: Callable[[str], Any] = str.strip
) -> type[InputFilter]:
    """An ``InputFilter`` comparing ``lookup`` with the typed value passed through ``clean``."""
    return type(
        f"{parameter_name.title().replace('_', '')}InputFilter",
        (InputFilter,),
        {
            "title": title,
            "parameter_name": parameter_name,
            "lookup": lookup,
            "clean_value": lambda self, value: clean(value),
        },
    )


# --------------------------------------------------------------------------------------------------
# Audit helpers


def form_changes(form: BaseForm, *, created: bool = False) -> dict[str, list[Any]]:
    """``{"field": [old, new]}`` for every field the form changed (old is None on creation)."""
    changes: dict[str, list[Any]] = {}
    for name in form.changed_data:
        old = None if created else form.initial.get(name)
        new = form.cleaned_data.get(name)
        changes[name] = [_plain(old), _plain(new)]
    return changes


def snapshot(instance: models.Model) -> dict[str, list[Any]]:
    """``{"field": [value, None]}`` of every concrete field: what a deletion took away."""
    return {
        field.attname: [_plain(getattr(instance, field.attname)), None]
        for field in instance._meta.concrete_fields
        if not field.primary_key
    }


def _plain(value: Any) -> Any:
    if isinstance(value, QuerySet):
        return [obj.pk for obj in value]
    if isinstance(value, models.Model):
        return value.pk
    return value


def audit_action(model: type[models.Model], verb: str) -> str:
    """``store.updated``, ``tier.deleted``: the model name, a dot, what happened."""
    return f"{model._meta.model_name}.{verb}"


# --------------------------------------------------------------------------------------------------
# Admin classes


class ScrmModelAdmin(admin.ModelAdmin):
    """The base of every HQ admin: scoped querysets, estimated counts, indexed search, audited writes.

    Models with a service override ``save_model``/``delete_model`` to call it; the defaults here save
    plain reference data and record ``<model>.created/updated/deleted`` with ``{"field": [old, new]}``.
    A ``ValidationError`` a service raises while saving rolls the whole request back and is shown as
    an error message on the form it came from.
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False  # the stock "(N total)" is a second count(*) on every page
    show_facets = admin.ShowFacets.NEVER  # facet counts are one aggregate per choice over the table
    list_per_page = 50
    indexed_search: IndexedSearch | None = None

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return scoped(super().get_queryset(request), request.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if self.indexed_search is None:
            return super().get_search_results(request, queryset, search_term)
        return self.indexed_search.apply(queryset, search_term), False

    # Writes ---------------------------------------------------------------------------------------

    def save_model(self, request: HttpRequest, obj: Any, form: BaseForm, change: bool) -> None:
        changes = form_changes(form, created=not change)
        if change and not changes:
            return  # nothing changed: no write, nothing to record
        # The event below is the record of this write, so the database's row triggers stand aside.
        with audit.app_audited():
            obj.save()
            verb = "updated" if change else "created"
            audit.record(
                Actor.from_request(request), audit_action(type(obj), verb), target=obj, changes=changes
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with audit.app_audited():
            audit.record(
                Actor.from_request(request),
                audit_action(type(obj), "deleted"),
                target=obj,
                changes=snapshot(obj),
            )
            obj.delete()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        actor = Actor.from_request(request)
        with audit.app_audited():
            for obj in queryset:
                audit.record(actor, audit_action(type(obj), "deleted"), target=obj, changes=snapshot(obj))
            queryset.delete()

    def save_formset(self, request: HttpRequest, form: BaseForm, formset: Any, change: bool) -> None:
        """Inline rows are saved one by one so each leaves its own audit event.

        View-only rows never count as changed (Django guards their ``has_changed``), so history
        inlines pass through here without a write.
        """
        formset.save(commit=False)
        actor = Actor.from_request(request)
        with audit.app_audited():
            for obj in formset.deleted_objects:
                audit.record(actor, audit_action(type(obj), "deleted"), target=obj, changes=snapshot(obj))
                obj.delete()
            for inline_form in formset.forms:
                if inline_form in formset.deleted_forms or not inline_form.has_changed():
                    continue
                obj = inline_form.instance
                created = obj._state.adding
                changes = form_changes(inline_form, created=created)
                obj.save()
                verb = "created" if created else "updated"
                audit.record(actor, audit_action(type(obj), verb), target=obj, changes=changes)
            formset.save_m2m()

    # A service's refusal (a race the form could not foresee) ---------------------------------------

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as error:
            # Raised inside the view's transaction, so nothing of this request was written.
            for message in error.messages:
                self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as error:
            for message in error.messages:
                self.message_user(request, message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class AppendOnlyAdmin(ScrmModelAdmin):
    """Ledgers and trails: rows are never changed or deleted here (the database refuses too).

    Adding is off unless a subclass sets ``add_through_service`` and saves through the service that
    owns the ledger; then the user's ordinary add permission applies.
    """

    add_through_service = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.add_through_service and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ScrmTabularInline(admin.TabularInline):
    """Base inline: no blank extra rows (they cost a form each), change links, audited saves.

    The parent ``ScrmModelAdmin.save_formset`` records each row it saves or deletes.
    """

    extra = 0
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return scoped(super().get_queryset(request), request.user)


class LatestRowsFormSet(BaseInlineFormSet):
    """An inline formset over only the newest ``latest_rows`` rows, plus a link to all of them.

    A member with thousands of orders must not put thousands of rows on the change page. One row
    more than shown is fetched to know whether there are more, instead of counting them.
    """

    latest_rows = 10

    def get_queryset(self) -> Any:
        if not hasattr(self, "_queryset"):
            queryset = super().get_queryset()
            rows = list(queryset[: self.latest_rows + 1])
            self.has_more = len(rows) > self.latest_rows
            self._queryset = rows[: self.latest_rows]
        return self._queryset

    @property
    def full_list_url(self) -> str:
        if self.instance is None or self.instance.pk is None:
            return ""
        opts = self.model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return f"{url}?{self.fk.name}__id__exact={self.instance.pk}"


class LatestRowsInline(ScrmTabularInline):
    """An inline showing the newest rows of a long history with a link to the filtered full list."""

    formset = LatestRowsFormSet
    template = "admin/scrm/latest_rows_tabular.html"
    latest_rows = 10

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        formset.latest_rows = self.latest_rows
        return formset


class ReadOnlyLatestRowsInline(LatestRowsInline):
    """History rows (orders, ledgers, assignments): shown, never edited here."""

    can_delete = False
    max_num = 0

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        return tuple(self.fields or ())


# --------------------------------------------------------------------------------------------------
# Member labels that never show a full mobile number


def member_label(member: Any) -> str:
    """``王小明（138****5678）``: enough to recognise a member in a list, never the full number."""
    if member is None:
        return ""
    masked = mask_mobile(member.mobile)
    return f"{member.name}（{masked}）" if member.name else masked


# --------------------------------------------------------------------------------------------------
# Background export of a changelist


# Query parameters that change how the list is shown, not which rows it holds.
NOT_FILTERS = frozenset({PAGE_VAR, ERROR_FLAG, IS_POPUP_VAR, TO_FIELD_VAR})
EXPORT_FORMATS = {"xlsx": _("Export to Excel in the background"), "csv": _("Export to CSV in the background")}
# Ticked rows travel as ids; "select all" travels as the filters. A page holds at most a few hundred.
MAX_SELECTED_ROWS = 10_000


def changelist_filters(query: QueryDict) -> dict[str, list[str]]:
    """The changelist's filters, search and ordering as JSON: ``{"tier__id__exact": ["3"], "q": [...]}``."""
    return {name: query.getlist(name) for name in query if name not in NOT_FILTERS}


class BackgroundExportMixin:
    """Export a changelist, with its current filters, search and ordering, as a background job.

    Put it first in the bases of a ``ScrmModelAdmin`` and set ``export_columns``. The changelist gets
    two actions (selected rows, or every matching row with "select all") and two buttons (every
    matching row) for xlsx and csv. The job stores the filters as the query string the list had; the
    worker rebuilds the same queryset through this ModelAdmin's own ``ChangeList`` for the requesting
    user, so the file holds exactly the rows the list showed, filtered by the same code, and nothing
    the user may no longer see (``run_export`` scopes it again).

    Each ModelAdmin with columns registers itself as the export source named after its model
    (``members.member``), so the worker finds it by the job's ``resource``.
    """

    export_columns: Sequence[Column] = ()
    # What a user needs besides the model's view permission, e.g. "members.export" for personal data.
    export_permission: str = ""
    change_list_template = "admin/exports/change_list.html"

    model: type[models.Model]
    opts: Any
    admin_site: admin.AdminSite

    def __init__(self, model: type[models.Model], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)  # type: ignore[call-arg]
        if self.export_columns:
            register_source(self.export_source())

    def export_source(self) -> ExportSource:
        opts = self.model._meta
        permissions = [f"{opts.app_label}.view_{opts.model_name}"]
        if self.export_permission:
            permissions.append(self.export_permission)
        return ExportSource(
            name=opts.label_lower,
            model=self.model,
            columns=tuple(self.export_columns),
            permissions=tuple(permissions),
            build_queryset=self.export_queryset,
        )

    def has_background_export_permission(self, request: HttpRequest) -> bool:
        return bool(self.export_columns) and self.export_source().may_export(request.user)

    def export_queryset(self, user: Any, params: Mapping[str, Any]) -> QuerySet[Any]:
        """The changelist's rows for ``user`` under the stored filters (the worker calls this)."""
        request = HttpRequest()
        request.method = "GET"
        request.GET = QueryDict(urlencode(params.get("filters") or {}, doseq=True))
        request.user = user
        # ChangeList.__init__ runs its get_queryset(request) (filters, search, ordering) exactly once.
        queryset = self.get_changelist_instance(request).queryset  # type: ignore[attr-defined]
        selected = params.get("pks")
        return queryset if selected is None else queryset.filter(pk__in=selected)

    # Starting an export -----------------------------------------------------------------------------

    def start_background_export(
        self, request: HttpRequest, file_format: str, *, selected: list[str] | None = None
    ) -> None:
        params: dict[str, Any] = {"filters": changelist_filters(request.GET), "pks": selected}
        job = request_export(
            self.export_source(), params=params, file_format=file_format, actor=Actor.from_request(request)
        )
        link = format_html('<a href="{}">{}</a>', reverse("exports:list"), gettext("My exports"))
        text = gettext("Export #%(number)s is being prepared. Download it from %(link)s when it is ready.")
        self.message_user(  # type: ignore[attr-defined]
            request, mark_safe(conditional_escape(text) % {"number": job.pk, "link": link}), messages.SUCCESS
        )

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        if IS_POPUP_VAR not in request.GET and self.has_background_export_permission(request):
            for file_format, description in EXPORT_FORMATS.items():
                name = f"export_{file_format}_in_background"
                actions[name] = (_export_action(file_format), name, description)
        return actions

    # The buttons above the list ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        view = self.admin_site.admin_view(require_POST(self.background_export_view))
        name = f"{opts.app_label}_{opts.model_name}_export_background"
        return [path("export-background/", view, name=name), *super().get_urls()]  # type: ignore[misc]

    def background_export_view(self, request: HttpRequest) -> HttpResponse:
        """Every row the list matches (its query string came along), as xlsx or csv."""
        if not self.has_background_export_permission(request):
            raise PermissionDenied
        file_format = request.POST.get("format", "")
        if file_format not in EXPORT_FORMATS:
            return HttpResponseBadRequest()
        opts = self.model._meta
        back = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        filters = changelist_filters(request.GET)
        try:
            self.get_changelist_instance(request)  # type: ignore[attr-defined]  # refuses unknown filters
        except IncorrectLookupParameters:
            self.message_user(request, gettext("These filters cannot be exported."), messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(back)
        self.start_background_export(request, file_format)
        return HttpResponseRedirect(f"{back}?{urlencode(filters, doseq=True)}" if filters else back)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if self.has_background_export_permission(request):
            opts = self.model._meta
            extra_context = {
                **(extra_context or {}),
                "background_export_url": reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_export_background"
                ),
                "exports_url": reverse("exports:list"),
            }
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


def _export_action(file_format: str) -> Callable[..., None]:
    def export_in_background(
        modeladmin: BackgroundExportMixin, request: HttpRequest, queryset: QuerySet[Any]
    ) -> None:
        if request.POST.get("select_across") == "1":
            selected = None  # every row matching the filters: the worker rebuilds them
        else:
            if len(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)) > MAX_SELECTED_ROWS:
                modeladmin.message_user(  # type: ignore[attr-defined]
                    request, gettext("Too many rows selected; use the filters instead."), messages.ERROR
                )
                return
            # The ticked rows the user can see under these filters (one query over a page of ids);
            # the worker narrows to them again.
            selected = [str(pk) for pk in queryset.values_list("pk", flat=True)]
        modeladmin.start_background_export(request, file_format, selected=selected)

    export_in_background.__name__ = f"export_{file_format}_in_background"
    return export_in_background


class SingletonAdmin(ScrmModelAdmin):
    """Settings kept in one row, never deleted: once the row exists, "add" opens it.

    The add permission stays the plain one: asking whether the row exists on every admin page's
    sidebar would cost a query each.
    """

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        first = self.model._default_manager.order_by("pk").values_list("pk", flat=True).first()
        if first is not None:
            return self.change_view(request, str(first), form_url, extra_context)
        return super().add_view(request, form_url, extra_context)
