"""Server-rendered sign-in, profile chooser and consent pages of the code flow."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from .. import audit, authorization, mfa
from .. import launch as launch_utils
from ..signin import THROTTLED, authenticate_email, begin_second_factor, establish_session
from .decorators import auth_page


def _resume_url(rid: str) -> str:
    return f"{reverse('medplum_auth:authorize-resume')}?rid={rid}"


class _PendingMixin:
    """Loads the parked authorization request named by ``rid``."""

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        self.rid = request.GET.get("rid") or request.POST.get("rid") or ""
        self.pending = authorization.load(request, self.rid)
        if self.pending is None:
            return authorization.expired_page(request)
        self.client = authorization.client_for(self.pending)
        if self.client is None:
            return authorization.error_page(request, "Invalid request", "Client not found.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def context(self, **extra: object) -> dict[str, object]:
        return {"rid": self.rid, "client": self.client, **extra}


@method_decorator([auth_page, csrf_protect, sensitive_post_parameters("password")], name="dispatch")
class SignInView(_PendingMixin, View):
    template_name = "medplum_auth/signin.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        email = self.pending["params"].get("login_hint", "")
        return render(request, self.template_name, self.context(email=email))

    def post(self, request: HttpRequest) -> HttpResponse:
        email = request.POST.get("email", "")
        user, error = authenticate_email(email, request.POST.get("password", ""), audit.client_address(request))
        audit.record_sign_in(request, email=email, user=user, client=self.client, throttled=error == THROTTLED)
        if user is None:
            return render(request, self.template_name, self.context(email=email, error=error), status=400)
        # Signing in as another user than the session's flushes the session (Django's login):
        # keep this request, minus any profile or consent chosen by the previous user.
        pending = {k: v for k, v in self.pending.items() if k not in {"membership", "granted"}}
        if mfa.required_for(user, self.client.project) or authorization.wants_mfa(self.pending):
            return begin_second_factor(request, user, _resume_url(self.rid), label=self.client.name,
                                               project=self.client.project,
                                               keep=lambda: authorization.save(request, self.rid, pending))
        establish_session(request, user, "pwd")
        authorization.save(request, self.rid, pending)
        return HttpResponseRedirect(_resume_url(self.rid))


@method_decorator([auth_page, csrf_protect], name="dispatch")
class ProfileView(_PendingMixin, View):
    template_name = "medplum_auth/profile.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return HttpResponseRedirect(_resume_url(self.rid))
        memberships = authorization.memberships_for(request.user, self.client)
        return render(request, self.template_name, self.context(memberships=memberships))

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return HttpResponseRedirect(_resume_url(self.rid))
        memberships = authorization.memberships_for(request.user, self.client)
        chosen = request.POST.get("membership", "")
        if not any(str(m.pk) == chosen for m in memberships):
            return render(request, self.template_name,
                          self.context(memberships=memberships, error="Choose one of your profiles."), status=400)
        self.pending["membership"] = chosen
        authorization.save(request, self.rid, self.pending)
        return HttpResponseRedirect(_resume_url(self.rid))


@method_decorator([auth_page, csrf_protect], name="dispatch")
class ConsentView(_PendingMixin, View):
    template_name = "medplum_auth/consent.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return HttpResponseRedirect(_resume_url(self.rid))
        rows = authorization.scope_rows(self.pending["scopes"], self._unreachable(request))
        return render(request, self.template_name, self.context(rows=rows))

    def _unreachable(self, request: HttpRequest) -> list[str]:
        membership = authorization.chosen_membership(request.user, self.client, self.pending)
        if membership is None:
            return []
        return authorization.unreachable_scopes(self.client, membership, self.pending["scopes"])

    def post(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return HttpResponseRedirect(_resume_url(self.rid))
        params = self.pending["params"]
        if request.POST.get("action") != "allow":
            authorization.discard(request, self.rid)
            authorization.record_denied(request, self.client, "user_denied", scopes=self.pending["scopes"])
            return authorization.error_redirect(self.pending["redirect_uri"], "access_denied",
                                                "The user denied the request.", params.get("state"))
        chosen = set(request.POST.getlist("scope"))
        unreachable = self._unreachable(request)
        granted = authorization.grantable(
            [s for s in self.pending["scopes"] if s in chosen or s == "openid" or s in unreachable], unreachable)
        authorization.record_consent(request.user, self.client, granted)
        self.pending["granted"] = granted
        authorization.save(request, self.rid, self.pending)
        return HttpResponseRedirect(_resume_url(self.rid))


PICKER_RESULTS = 20


@method_decorator([auth_page, csrf_protect], name="dispatch")
class PatientView(_PendingMixin, View):
    """The standalone-launch patient picker (``launch/patient`` by a user who is not a Patient).

    It searches through ``medplum_auth.launch.patient_search()``; without one it asks for an id.
    """

    template_name = "medplum_auth/patient.html"

    def _membership(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        """The profile that needs a patient; ``None`` (back to the flow) for anyone else."""
        if not request.user.is_authenticated or "launch" in self.pending["params"]:
            return None
        membership = authorization.chosen_membership(request.user, self.client, self.pending)
        if membership is None or not launch_utils.wants_patient_picker(self.pending["scopes"], membership):
            return None
        return membership

    def _page(self, membership: object, status: int = 200, **extra: object) -> HttpResponse:
        search = launch_utils.patient_search()
        query = self.request.GET.get("q", "").strip()[:200]
        results = search(membership, query=query, client=self.client)[:PICKER_RESULTS] if search is not None else []
        return render(self.request, self.template_name,
                      self.context(searchable=search is not None, query=query, results=results, **extra),
                      status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        membership = self._membership(request)
        if membership is None:
            return HttpResponseRedirect(_resume_url(self.rid))
        return self._page(membership)

    def post(self, request: HttpRequest) -> HttpResponse:
        membership = self._membership(request)
        if membership is None:
            return HttpResponseRedirect(_resume_url(self.rid))
        value = request.POST.get("patient", "")
        reference = launch_utils.check_patient(membership, value, self.client)
        if reference is None:
            return self._page(membership, status=400, value=value, error="Choose a patient you can access.")
        self.pending["patient"] = reference
        self.pending["patient_for"] = str(membership.pk)
        authorization.save(request, self.rid, self.pending)
        return HttpResponseRedirect(_resume_url(self.rid))
