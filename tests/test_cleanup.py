from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from medplum_auth import services
from medplum_auth.models import LaunchContext, Login, PushedAuthorizationRequest, UsedClientAssertion
from tests.factories import ClientApplicationFactory, MembershipFactory


def make_login(client, membership, *, age_days: int, refresh_expires_in_days: int | None = None,
               revoked_days_ago: int | None = None) -> Login:
    now = timezone.now()
    login = Login.objects.create(user=membership.user, client=client, project=client.project, membership=membership,
                                 auth_time=now, scope="openid")
    fields = {"created": now - timedelta(days=age_days)}
    if refresh_expires_in_days is not None:
        fields["refresh_expires_at"] = now + timedelta(days=refresh_expires_in_days)
    if revoked_days_ago is not None:
        fields["revoked_at"] = now - timedelta(days=revoked_days_ago)
    Login.objects.filter(pk=login.pk).update(**fields)
    return login


@pytest.mark.django_db
def test_cleanup_deletes_only_dead_old_logins(project):
    client = ClientApplicationFactory(project=project)
    member = MembershipFactory(project=project)
    old_no_refresh = make_login(client, member, age_days=40)
    old_expired_refresh = make_login(client, member, age_days=40, refresh_expires_in_days=-1)
    old_revoked = make_login(client, member, age_days=40, refresh_expires_in_days=5, revoked_days_ago=35)
    old_live_refresh = make_login(client, member, age_days=40, refresh_expires_in_days=3)
    recent = make_login(client, member, age_days=2)
    UsedClientAssertion.objects.create(jti_digest="a" * 64, expires_at=timezone.now() - timedelta(minutes=1))
    UsedClientAssertion.objects.create(jti_digest="b" * 64, expires_at=timezone.now() + timedelta(minutes=5))
    client.launch_uri = "https://app.example.org/launch"
    client.save()
    old_launch = services.create_launch(client, "Patient/p-1")
    LaunchContext.objects.filter(pk=old_launch.pk).update(created=timezone.now() - timedelta(days=40),
                                                          expires_at=timezone.now() - timedelta(days=40))
    new_launch = services.create_launch(client, "Patient/p-1")
    for digest, minutes in (("c" * 64, -1), ("d" * 64, 1)):
        PushedAuthorizationRequest.objects.create(digest=digest, client=client, parameters={},
                                                  expires_at=timezone.now() + timedelta(minutes=minutes))

    out = StringIO()
    call_command("medplum_cleanup", "--json", stdout=out)

    assert json.loads(out.getvalue()) == {
        "deleted": {"logins": 3, "client_assertions": 1, "launches": 1, "pushed_authorization_requests": 1,
                    "audit_events": 0}, "days": 30}
    assert list(PushedAuthorizationRequest.objects.values_list("digest", flat=True)) == ["d" * 64]
    assert list(LaunchContext.objects.values_list("pk", flat=True)) == [new_launch.pk]
    remaining = set(Login.objects.values_list("pk", flat=True))
    assert remaining == {old_live_refresh.pk, recent.pk}
    assert not {old_no_refresh.pk, old_expired_refresh.pk, old_revoked.pk} & remaining
    assert list(UsedClientAssertion.objects.values_list("jti_digest", flat=True)) == ["b" * 64]


@pytest.mark.django_db
@pytest.mark.parametrize("days", ["0", "-3"])
def test_cleanup_refuses_a_window_shorter_than_token_lifetime(project, days):
    client = ClientApplicationFactory(project=project)
    member = MembershipFactory(project=project)
    make_login(client, member, age_days=40)
    with pytest.raises(CommandError, match="--days must be at least 1"):
        call_command("medplum_cleanup", "--days", days, stdout=StringIO())
    assert Login.objects.count() == 1
