"""Authlib (a second, Python client library) against the live server over real HTTP.

Authlib registers two confidential clients with the project's initial access token (RFC 7591:
``client_secret_post``, and ``private_key_jwt`` with its public key as ``jwks``), reads and updates
them with the registration access token (RFC 7592), pushes the authorization request with the new
credentials (RFC 9126), runs the code flow with PKCE S256 through ``OAuth2Session``, validates the
ID token with Authlib's JOSE and the discovery JWKS, calls UserInfo and the FHIR API, refreshes,
then deletes the client and proves its credentials are refused.

The sign-in and consent pages are plain HTML forms (CSRF token, no script needed), so a
``requests`` session submits them as a browser would (GET the page, POST the form's fields with
its cookies); Chromium already drives the same pages in ``test_openid_client.py``, and a browser
here would add its start-up time for nothing the forms need.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7591 import ClientMetadataClaims
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.errors import InvalidClaimError  # what Authlib 1.9's claim validation raises

from medplum_auth import services
from medplum_auth.models import ClientApplication, Login, SecurityEvent
from tests.e2e.conftest import REDIRECT_URI

with warnings.catch_warnings():
    # Authlib 1.x announces joserfc as the successor of authlib.jose; 1.9 still ships it.
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
SCOPE = "openid profile email offline_access"
TIMEOUT = 15


class Forms(HTMLParser):
    """The forms of a page: action, and the fields a browser would submit (checked boxes only)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": [], "buttons": []})
        elif self.forms and tag in {"input", "button"} and a.get("name") and "disabled" not in a:
            kind = a.get("type", "text" if tag == "input" else "submit")
            if kind == "submit":
                self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))
            elif kind != "checkbox" or "checked" in a:
                self.forms[-1]["fields"].append((a["name"], a.get("value", "")))


def submit(http: requests.Session, page: requests.Response, fill: dict[str, str],
           button: tuple[str, str] | None = None) -> requests.Response:
    parser = Forms()
    parser.feed(page.text)
    form = next(f for f in parser.forms if f["fields"])
    fields = [(name, fill.get(name, value)) for name, value in form["fields"]]
    fields += [(name, value) for name, value in fill.items() if name not in dict(fields)]
    if button:
        assert button in form["buttons"], form["buttons"]
        fields.append(button)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(page.url))
    return http.post(urljoin(page.url, form["action"]), data=fields, allow_redirects=False, timeout=TIMEOUT,
                     headers={"Origin": origin, "Referer": page.url})


def sign_in(authorize_url: str, email: str, password: str) -> tuple[str, list[str]]:
    """Follow ``authorize_url`` like a browser with no session: sign in, allow; the callback URL."""
    http = requests.Session()
    steps: list[str] = []
    response = http.get(authorize_url, allow_redirects=False, timeout=TIMEOUT)
    for _ in range(10):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(REDIRECT_URI + "?"):
                return location, steps
            response = http.get(location, allow_redirects=False, timeout=TIMEOUT)
            continue
        assert response.status_code == 200, (response.status_code, response.text[:2000])
        path = urlsplit(response.url).path
        steps.append(path.rsplit("/", 1)[-1])
        if path == "/oauth2/signin":
            response = submit(http, response, {"email": email, "password": password})
        elif path == "/oauth2/consent":
            response = submit(http, response, {}, ("action", "allow"))
        else:
            pytest.fail(f"unexpected page {response.url}: {response.text[:1000]}")
    pytest.fail(f"no redirect to {REDIRECT_URI}; steps {steps}")


def unverified(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token: str) -> OAuth2Session:
    """An Authlib session that sends ``token`` as its Bearer token (initial or registration access token)."""
    return OAuth2Session(token={"access_token": token, "token_type": "Bearer"}, default_timeout=TIMEOUT)


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's ``private_key_jwt`` with ``exp`` a minute ahead: Authlib signs for an hour by default,
    and the server takes at most five minutes (SMART Backend Services, for every client). A fresh
    claims dict each time, as Authlib writes the ``jti`` into it."""

    def sign(self, auth, token_endpoint):
        self.claims = {"exp": int(time.time()) + 60}
        return super().sign(auth, token_endpoint)


@pytest.fixture
def insecure_transport(monkeypatch):
    # The live server is http://127.0.0.1:<port>: Authlib refuses plain HTTP unless told, and that
    # is the only check relaxed here.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")


@pytest.mark.spec("RFC 7591 §3, RFC 7592 §2.1-2.3, RFC 9126 §2, RFC 7523 §2.2 private_key_jwt, RFC 7636 S256, "
                  "OIDC Core 3.1.3.7 ID token validation, RFC 9207 iss, OIDC Core 12 refresh")
@pytest.mark.parametrize("method", ["client_secret_post", "private_key_jwt"])
def test_authlib_registers_pushes_signs_in_refreshes_and_deletes(seed, live_gunicorn, insecure_transport, method):
    data = seed()
    project = data.project
    policy = services.create_access_policy(project, "Own record", [
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read", "search"]}])
    token_row, initial = services.create_registration_token(project, label="authlib", access_policy=policy)
    issuer = live_gunicorn.url
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    assert meta["registration_endpoint"] == f"{issuer}/oauth2/register"
    assert meta["pushed_authorization_request_endpoint"] == f"{issuer}/oauth2/par"
    assert method in meta["token_endpoint_auth_methods_supported"]

    # 1. RFC 7591 registration with the initial access token (Authlib sends it as Bearer).
    metadata: dict[str, Any] = {
        "client_name": f"Authlib {method}", "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": method,
    }
    private_key = None
    if method == "private_key_jwt":
        private_key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
        public = private_key.as_dict(is_private=False)
        metadata["jwks"] = {"keys": [{**public, "kid": private_key.thumbprint(), "alg": "RS256", "use": "sig"}]}
    refused = requests.post(meta["registration_endpoint"], json=metadata, timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    created = bearer(initial).post(meta["registration_endpoint"], json=metadata)
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    registered = created.json()
    ClientMetadataClaims(registered, {}).validate()  # Authlib's RFC 7591 §2 metadata checks
    client_id = registered["client_id"]
    assert {k: registered[k] for k in metadata} == metadata
    assert registered["registration_client_uri"] == f"{issuer}/oauth2/register/{client_id}"
    assert registered["registration_access_token"] and registered["client_id_issued_at"] > 0
    if method == "client_secret_post":
        assert registered["client_secret"] and registered["client_secret_expires_at"] == 0
    else:
        assert "client_secret" not in registered
    row = ClientApplication.objects.get(client_id=client_id)
    assert row.project_id == project.pk and row.access_policy_id == policy.pk
    assert row.is_confidential and row.registration_source == "dcr" and row.redirect_uri_list == [REDIRECT_URI]
    assert row.jwks == metadata.get("jwks")
    if "client_secret" in registered:
        assert row.client_secret and registered["client_secret"] not in row.client_secret  # a digest only
    event = SecurityEvent.objects.get(event_type="client.created", subject=row.reference)
    assert event.project_id == project.pk and event.detail["registration_token"] == f"RegistrationToken/{token_row.pk}"

    # 2. RFC 7592 read and update with the registration access token.
    manage = bearer(registered["registration_access_token"])
    assert bearer(initial).get(registered["registration_client_uri"]).status_code == 401
    read = manage.get(registered["registration_client_uri"])
    assert read.status_code == 200 and read.headers["Cache-Control"] == "no-store"
    stored = read.json()
    assert {k: stored[k] for k in metadata} == metadata  # what was registered, auth method included
    assert "client_secret" not in stored and "registration_access_token" not in stored
    changes = {**metadata, "client_id": client_id, "client_name": f"Authlib {method} (renamed)"}
    if "client_secret" in registered:
        changes["client_secret"] = registered["client_secret"]
    updated = manage.put(registered["registration_client_uri"], json=changes)
    assert updated.status_code == 200, updated.text
    assert updated.json()["client_name"] == changes["client_name"]
    assert manage.get(registered["registration_client_uri"]).json()["token_endpoint_auth_method"] == method
    row.refresh_from_db()
    assert row.name == changes["client_name"]
    assert SecurityEvent.objects.filter(event_type="client.updated", subject=row.reference).count() == 1

    # 3. PAR with the new credentials: Authlib builds the request (state, nonce, S256 challenge)
    # and it is pushed authenticated; the browser carries only client_id and request_uri.
    # PrivateKeyJWT() signs for the endpoint it is sent to: aud is the PAR endpoint, then the token
    # endpoint (RFC 9126 §2 has the server accept either, or the issuer).
    secret = registered.get("client_secret") or private_key.as_pem(is_private=True)
    oauth = OAuth2Session(client_id, secret, token_endpoint_auth_method=method, redirect_uri=REDIRECT_URI,
                          scope=SCOPE, code_challenge_method="S256", default_timeout=TIMEOUT)
    if method == "private_key_jwt":
        oauth.register_client_auth_method(ShortLivedPrivateKeyJWT(headers={"kid": metadata["jwks"]["keys"][0]["kid"]}))
    verifier = generate_token(64)
    nonce = "authlib-nonce-" + method
    request_url, state = oauth.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                        nonce=nonce)
    params = dict(parse_qsl(urlsplit(request_url).query))
    assert params["code_challenge"] == create_s256_code_challenge(verifier)
    if method == "client_secret_post":
        params.pop("client_id")  # Authlib's client_secret_post adds it to the body (once, RFC 6749 §3.1)
    pushed = oauth.post(meta["pushed_authorization_request_endpoint"], data=params, withhold_token=True,
                        auth=oauth.client_auth(method))
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["Cache-Control"] == "no-store"
    request_uri = pushed.json()["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:") and pushed.json()["expires_in"] == 90
    unauthenticated = requests.post(meta["pushed_authorization_request_endpoint"], data=params, timeout=TIMEOUT)
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "invalid_client"

    # 4. Sign in through the real pages; the code arrives at the redirect URI with state and iss.
    authorize = requests.Request("GET", meta["authorization_endpoint"],
                                 params={"client_id": client_id, "request_uri": request_uri}).prepare().url
    callback, steps = sign_in(authorize, data.email, data.password)
    assert steps == ["signin", "consent"]
    returned = dict(parse_qsl(urlsplit(callback).query))
    assert returned["state"] == state and returned["iss"] == issuer and returned["code"]

    # 5. Code exchange with the verifier, authenticated as registered (Authlib checks state).
    tokens = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback, state=state,
                               code_verifier=verifier)
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["expires_in"] > 0
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    login = Login.objects.get(client__client_id=client_id)
    assert login.membership_id == data.membership.pk and login.code_redeemed_at is not None

    # 6. The ID token, validated with Authlib's JOSE against the discovery JWKS.
    keys = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=TIMEOUT).json())
    claims = jwt.decode(tokens["id_token"], keys, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": issuer}},
                        claims_params={"nonce": nonce, "client_id": client_id,
                                       "access_token": tokens["access_token"]})
    claims.validate()  # iss, aud, exp, iat, nonce, azp, at_hash
    assert claims["aud"] == client_id and claims["nonce"] == nonce
    assert claims["sub"] == str(data.membership.user_id) and claims["email"] == data.email
    assert claims.header["alg"] == "RS256" and claims.header["kid"]
    forged = jwt.decode(tokens["id_token"], keys, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": issuer}},
                        claims_params={"nonce": "another nonce", "client_id": client_id})
    with pytest.raises(InvalidClaimError, match="nonce"):
        forged.validate()
    assert unverified(tokens["access_token"])["client_id"] == client_id

    # 7. UserInfo and a FHIR read with the access token (Authlib attaches it), under the policy.
    userinfo = oauth.get(meta["userinfo_endpoint"])
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == claims["sub"]
    assert userinfo.json()["email"] == data.email
    patient = oauth.get(f"{issuer}/fhir/R4/{data.membership.profile}")
    assert patient.status_code == 200, patient.text
    assert patient.json()["resourceType"] == "Patient" and patient.json()["id"] == str(data.membership.profile_id)
    outside = oauth.get(f"{issuer}/fhir/R4/Observation")
    assert outside.status_code == 403 and outside.json()["resourceType"] == "OperationOutcome"

    # 8. Refresh rotates both tokens; the new access token works.
    first = dict(tokens)
    refreshed = oauth.refresh_token(meta["token_endpoint"])
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["refresh_token"] != first["refresh_token"]
    assert oauth.get(meta["userinfo_endpoint"]).status_code == 200

    # 9. RFC 7592 delete: the row, its logins and its tokens go; its credentials fail (401 invalid_client).
    deleted = manage.delete(registered["registration_client_uri"])
    assert deleted.status_code == 204 and deleted.content == b""
    assert not ClientApplication.objects.filter(client_id=client_id).exists()
    assert not Login.objects.filter(client__client_id=client_id).exists()
    assert SecurityEvent.objects.filter(event_type="client.deleted", subject=row.reference).count() == 1
    gone = manage.get(registered["registration_client_uri"])
    assert gone.status_code == 401 and gone.json()["error"] == "invalid_token"
    with pytest.raises(OAuthError) as refused_refresh:
        oauth.refresh_token(meta["token_endpoint"])
    assert refused_refresh.value.error == "invalid_client"
    raw = oauth.post(meta["token_endpoint"], withhold_token=True, auth=oauth.client_auth(method),
                     data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert raw.status_code == 401 and raw.json()["error"] == "invalid_client"
    repushed = oauth.post(meta["pushed_authorization_request_endpoint"], data=params, withhold_token=True,
                          auth=oauth.client_auth(method))
    assert repushed.status_code == 401 and repushed.json()["error"] == "invalid_client"
    assert oauth.get(meta["userinfo_endpoint"]).status_code == 401
