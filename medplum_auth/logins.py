"""Creating logins and authorization codes: one path for the browser flow and the JSON API."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from . import audit
from .conf import auth_settings
from .digests import token_digest
from .models import ClientApplication, Login, ProjectMembership


def code_digest(code: str) -> str:
    return token_digest(code)


def create_login(
    *,
    user: Any,
    client: ClientApplication,
    membership: ProjectMembership | None,
    scope: str,
    auth_time: datetime,
    nonce: str = "",
    redirect_uri: str = "",
    code_challenge: str = "",
    code_challenge_method: str = "",
    remote_addr: str | None = None,
    user_agent: str = "",
    code: str | None = None,
    launch: Any = None,
    launch_patient: str = "",
    launch_encounter: str = "",
    amr: str = "pwd",
    awaiting_mfa: bool = False,
    resource_scopes_withheld: bool = False,
    dpop_jkt: str = "",
) -> tuple[Login, str | None]:
    """A login for ``user`` at ``client``; with a membership it also gets a fresh code.

    Without a membership (the user must still choose a profile) no code is issued yet:
    :func:`issue_code` adds it once the profile is known. ``launch``, ``launch_patient`` and
    ``launch_encounter`` are the SMART launch context (``medplum_auth.launch``). ``amr`` says how
    the user signed in (RFC 8176); ``awaiting_mfa`` holds the code back until the second factor
    (``/auth/mfa/verify``). ``dpop_jkt`` binds the code to a DPoP key (RFC 9449 §10).
    """
    login = Login(
        user=user, client=client, project=client.project, membership=membership, auth_time=auth_time,
        scope=scope, nonce=nonce or "", redirect_uri=redirect_uri or "",
        code_challenge=code_challenge or "", code_challenge_method=code_challenge_method or "",
        remote_addr=remote_addr, user_agent=(user_agent or "")[:255],
        launch=launch, launch_patient=launch_patient or "", launch_encounter=launch_encounter or "",
        amr=amr, awaiting_mfa=awaiting_mfa, resource_scopes_withheld=resource_scopes_withheld,
        dpop_jkt=dpop_jkt or "",
    )
    issued = None
    if membership is not None and not awaiting_mfa:
        issued = code or secrets.token_urlsafe(32)
        _set_code(login, issued)
    login.save()
    if issued is not None:
        _granted(login, client)
    return login, issued


def _granted(login: Login, client: ClientApplication) -> None:
    """RFC 6749 §4.1.2: the user authorized ``client`` for these scopes (a code now stands for them)."""
    audit.record_for_login(audit.EventType.AUTHORIZATION_GRANTED, login, client=client,
                           detail={"scopes": login.scope.split(),
                                   "launch_patient": login.launch_patient or None},
                           message=f"authorization granted login={login.pk} client={client.client_id}")


def usable_logins(**filters: Any) -> QuerySet[Login]:
    """Logins matching ``filters`` that can still back a token: tokens issued, not revoked, and a
    refresh token or an access token (at the longest lifetime of their clients) still unexpired."""
    now = timezone.now()
    logins = Login.objects.filter(revoked_at__isnull=True, granted_at__isnull=False, **filters)
    longest = max(int(auth_settings.ACCESS_TOKEN_LIFETIME),
                  ClientApplication.objects.filter(pk__in=logins.values("client_id"))
                  .aggregate(m=Max("access_token_lifetime"))["m"] or 0)
    recent = now - timedelta(seconds=longest)
    return (logins.filter(Q(refresh_expires_at__gt=now) | Q(granted_at__gt=recent) | Q(last_refreshed_at__gt=recent))
            .select_related("user", "client", "membership"))


def _set_code(login: Login, code: str) -> None:
    login.code_digest = code_digest(code)
    login.code_expires_at = timezone.now() + timedelta(seconds=auth_settings.AUTHORIZATION_CODE_LIFETIME)


def issue_code(login: Login, membership: ProjectMembership) -> str:
    """Bind the chosen profile and issue the login's code (Medplum ``/auth/profile``)."""
    code = secrets.token_urlsafe(32)
    login.membership = membership
    _set_code(login, code)
    login.save(update_fields=["membership", "code_digest", "code_expires_at"])
    _granted(login, login.client)
    return code


def pass_second_factor(login: Login, amr: str) -> str | None:
    """The JSON login's second factor was verified: record how, and issue the code if the
    profile is known (else the caller answers with the memberships, as ``/auth/login`` does)."""
    login.awaiting_mfa = False
    login.amr = amr
    if login.membership_id is None:
        login.save(update_fields=["awaiting_mfa", "amr"])
        return None
    code = secrets.token_urlsafe(32)
    _set_code(login, code)
    login.save(update_fields=["awaiting_mfa", "amr", "code_digest", "code_expires_at"])
    return code


def purge(older_than: timedelta) -> dict[str, int]:
    """Delete logins that can no longer produce or back a valid token, spent assertion ``jti`` rows,
    expired pushed authorization requests, and EHR launch contexts created before the cutoff (they
    expire within minutes; a login keeps its own copy of the launch patient and encounter).

    A login is purged when it was created before ``now - older_than`` and its refresh token is
    missing or expired (or it was revoked before the cutoff). Access tokens of a purged login
    fail closed: the bearer check finds no login. ``older_than`` must exceed the longest access
    token lifetime in use.
    """
    from django.db.models import Q

    from .models import LaunchContext, PushedAuthorizationRequest, UsedClientAssertion

    now = timezone.now()
    cutoff = now - older_than
    dead = Login.objects.filter(created__lt=cutoff).filter(
        Q(revoked_at__lt=cutoff) | Q(refresh_expires_at__isnull=True) | Q(refresh_expires_at__lt=now))
    logins, _ = dead.delete()
    assertions, _ = UsedClientAssertion.objects.filter(expires_at__lt=now).delete()
    launches, _ = LaunchContext.objects.filter(created__lt=cutoff, expires_at__lt=now).delete()
    pushed, _ = PushedAuthorizationRequest.objects.filter(expires_at__lt=now).delete()
    return {"logins": logins, "client_assertions": assertions, "launches": launches,
            "pushed_authorization_requests": pushed}
