"""Audit log: the project's security events (``medplum_auth.SecurityEvent``), filtered and paged."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse

from medplum_auth.models import SecurityEvent

from ..forms import AuditFilterForm
from .base import ProjectAdminView

PAGE_SIZE = 50
MAX_PAGE = 200  # deeper pages: narrow the filters (an offset scans every row before it)


class AuditLogView(ProjectAdminView):
    section = "audit"

    def events(self, form: AuditFilterForm) -> QuerySet[SecurityEvent]:
        events = SecurityEvent.objects.filter(project=self.project)
        if not form.is_valid():
            return events.none()
        data = form.cleaned_data
        if data["event_type"]:
            events = events.filter(event_type=data["event_type"])
        if data["outcome"] == "success":
            events = events.filter(outcome=SecurityEvent.Outcome.SUCCESS)
        elif data["outcome"] == "failure":
            events = events.exclude(outcome=SecurityEvent.Outcome.SUCCESS)
        actor = data["actor"]
        if actor:
            kind, slash, ident = actor.partition("/")
            if slash and kind == "User":
                events = events.filter(actor_user=ident)
            elif slash and kind == "ClientApplication":
                events = events.filter(actor_client=ident)
            elif slash:
                events = events.filter(actor_profile=actor)
            else:
                events = events.filter(Q(actor_display__icontains=actor) | Q(actor_client=actor))
        if data["since"]:
            events = events.filter(recorded__gte=datetime.combine(data["since"], time.min, tzinfo=UTC))
        if data["until"]:
            events = events.filter(recorded__lt=datetime.combine(data["until"], time.min, tzinfo=UTC)
                                   + timedelta(days=1))
        return events.order_by("-recorded", "-id")

    def get(self, request: HttpRequest) -> HttpResponse:
        form = AuditFilterForm(request.GET)
        try:
            page = max(1, min(int(request.GET.get("page", "1")), MAX_PAGE))
        except ValueError:
            page = 1
        start = (page - 1) * PAGE_SIZE
        rows = list(self.events(form)[start:start + PAGE_SIZE + 1])
        query = request.GET.copy()
        query.pop("page", None)
        return self.render("project_admin/audit/list.html", status=200 if form.is_valid() else 400, form=form,
                           events=rows[:PAGE_SIZE], page=page, has_next=len(rows) > PAGE_SIZE and page < MAX_PAGE,
                           has_previous=page > 1, query=query.urlencode())
