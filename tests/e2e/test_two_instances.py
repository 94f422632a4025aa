"""Two app instances of one deployment on one database (DESIGN §7: stateless instances).

A browser-like client signs in and gets a code on instance A; the code is traded, the token
used and refreshed across instances A and B, and a replayed refresh token on B revokes the
family on both. Everything is plain HTTP against two gunicorn processes; signing keys,
logins and sessions live in the shared database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

import pytest

from tests.e2e.conftest import REDIRECT_URI, gunicorn

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.spec("DESIGN §7 stateless app instances")]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """Cookies, no automatic redirects: each hop is asserted by the test."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())

    def request(self, url: str, data: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=20) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


def sign_in_for_code(browser: Browser, base: str, client_id: str, email: str, password: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid offline_access", "state": "s-1", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    status, headers, _ = browser.request(f"{base}/oauth2/authorize?{query}")
    assert status == 302 and "/oauth2/signin?rid=" in headers["Location"]
    signin = absolute(base, headers["Location"])
    _, _, page = browser.request(signin)
    rid = urllib.parse.parse_qs(urllib.parse.urlsplit(signin).query)["rid"][0]
    status, headers, _ = browser.request(f"{base}/oauth2/signin", {
        "csrfmiddlewaretoken": csrf_token(page), "rid": rid, "email": email, "password": password})
    assert status == 302, headers
    location = headers["Location"]
    for _hop in range(5):
        if location.startswith(REDIRECT_URI):
            break
        url = absolute(base, location)
        status, headers, page = browser.request(url)
        if "/oauth2/consent" in url and status == 200:
            status, headers, _ = browser.request(f"{base}/oauth2/consent", {
                "csrfmiddlewaretoken": csrf_token(page), "rid": rid, "action": "allow",
                "scope": ["openid", "offline_access"]})
        assert status == 302, (url, status)
        location = headers["Location"]
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert location.startswith(REDIRECT_URI) and params["state"] == ["s-1"], location
    return params["code"][0], verifier


def post_token(base: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, _headers, body = Browser().request(f"{base}/oauth2/token", data)
    return status, json.loads(body)


def userinfo_status(base: str, access_token: str) -> int:
    status, _, _ = Browser().request(f"{base}/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return status


def test_sign_in_on_one_instance_use_tokens_on_the_other(tmp_path: Any) -> None:
    from medplum_auth import services
    from medplum_auth.models import Login

    services.ensure_signing_key()
    project = services.create_project("Two instances")
    client, _ = services.create_client(project, "Public app", redirect_uris=[REDIRECT_URI], public=True)
    services.invite_member(project, "pat@two.example", profile_type="Patient", first_name="Pat", last_name="Two",
                           password="Two-Instances-Pass-2026!")

    with gunicorn(tmp_path / "a.log") as a, gunicorn(tmp_path / "b.log", issuer=a.url) as b:
        code, verifier = sign_in_for_code(Browser(), a.url, client.client_id, "pat@two.example",
                                          "Two-Instances-Pass-2026!")
        status, tokens = post_token(b.url, {"grant_type": "authorization_code", "code": code,
                                            "client_id": client.client_id, "code_verifier": verifier,
                                            "redirect_uri": REDIRECT_URI})
        assert status == 200, tokens
        assert userinfo_status(a.url, tokens["access_token"]) == 200
        assert userinfo_status(b.url, tokens["access_token"]) == 200

        status, refreshed = post_token(a.url, {"grant_type": "refresh_token", "client_id": client.client_id,
                                               "refresh_token": tokens["refresh_token"]})
        assert status == 200 and refreshed["refresh_token"] != tokens["refresh_token"]
        assert userinfo_status(b.url, refreshed["access_token"]) == 200

        # The rotated-out refresh token replayed on the other instance revokes the family everywhere.
        status, replay = post_token(b.url, {"grant_type": "refresh_token", "client_id": client.client_id,
                                            "refresh_token": tokens["refresh_token"]})
        assert (status, replay["error"]) == (400, "invalid_grant")
        assert userinfo_status(a.url, refreshed["access_token"]) == 401
        assert userinfo_status(b.url, refreshed["access_token"]) == 401
    assert Login.objects.get().revoked_reason == "refresh_token_reuse"
