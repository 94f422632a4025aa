"""Demo Health App: a third-party healthcare web app that signs its users in with the provider.

It walks the integration guide the way any app would, over HTTP only (it imports nothing of the
provider's code): discovery → "Sign in" → ``/oauth2/authorize`` (authorization code, PKCE S256,
``state``, ``nonce``) → ``/callback`` → token exchange → the ID token verified against the JWK Set
→ userinfo and the user's FHIR data → refresh → RP-initiated logout. ``/launch`` is the SMART EHR
launch entry point (``launch_uri``): the provider opens it with ``iss`` and ``launch``.

Standard library plus ``jwcrypto`` (ID token signatures). Sessions live in memory: one process,
a demo. Run it with ``python3 examples/demo_client/app.py`` (see README.md next to this file).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from jwcrypto import jwk, jwt

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

COOKIE = "demo_session"
SCOPE = "openid profile email fhirUser offline_access user/Patient.rs user/Observation.rs user/Condition.rs"
LAUNCH_SCOPE = "openid fhirUser launch patient/Patient.rs patient/Observation.rs patient/Condition.rs"
HTTP_TIMEOUT = 15

#: What a user should read for each OAuth error the provider may send back (RFC 6749 §4.1.2.1, §5.2).
FRIENDLY_ERRORS = {
    "access_denied": ("You chose not to share your data",
                      "You declined the request on the sign-in page, so Demo Health App received nothing. "
                      "You can sign in again whenever you like."),
    "invalid_grant": ("That sign-in link expired",
                      "The one-time code from the sign-in page had expired or was already used before the "
                      "app could redeem it (codes are valid for about a minute and only once). Please sign in "
                      "again."),
    "state_mismatch": ("This sign-in response was not started here",
                       "The answer that arrived does not belong to a sign-in this browser started (it may be "
                       "old, from another tab, or forged), so the app ignored it to keep your account safe. "
                       "Please sign in again."),
    "issuer_mismatch": ("The response came from an unexpected server",
                        "The sign-in answer names a different identity provider than the one this app uses, so "
                        "it was ignored (RFC 9207). Please sign in again."),
    "login_required": ("Please sign in", "The provider needs you to sign in first."),
    "temporarily_unavailable": ("The provider is busy", "Please wait a moment and try again."),
}


@dataclass
class Config:
    """Where the provider is and who this app is; from the environment when run as a program."""

    issuer: str
    client_id: str
    base_url: str  # this app's own origin, e.g. http://127.0.0.1:8888
    scope: str = SCOPE
    launch_scope: str = LAUNCH_SCOPE

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base_url}/signed-out"

    @classmethod
    def from_env(cls) -> Config:
        port = os.environ.get("DEMO_CLIENT_PORT", "8888")
        return cls(issuer=os.environ.get("DEMO_ISSUER", "http://127.0.0.1:8000").rstrip("/"),
                   client_id=os.environ.get("DEMO_CLIENT_ID", "medplum-demo-public"),
                   base_url=os.environ.get("DEMO_CLIENT_URL", f"http://127.0.0.1:{port}").rstrip("/"))


class ProviderError(Exception):
    """An OAuth error answer (``error``/``error_description``) or an unusable response."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status


def http_json(url: str, *, form: dict[str, str] | None = None, token: str | None = None) -> tuple[int, Any]:
    """GET (or POST a form) and decode the JSON answer; HTTP errors are answers too."""
    headers = {"Accept": "application/json, application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:  # not started yet, or gone: say so, not a 500
        raise ProviderError("provider_unreachable",
                            f"The identity provider at {url.split('?')[0]} cannot be reached ({exc}). "
                            "Is it running? Try again in a moment.", 502) from None
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, {"error": "invalid_response", "error_description": body[:200].decode(errors="replace")}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, for display only (an access token is the API's business, not the app's)."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


class Provider:
    """The identity provider as seen from outside: discovery, JWK Set (cached, refetched for a new
    ``kid``), token, userinfo and FHIR calls."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._discovery: dict[str, Any] | None = None
        self._jwks: jwk.JWKSet | None = None
        self._lock = threading.Lock()

    @property
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            status, doc = http_json(f"{self.issuer}/.well-known/openid-configuration")
            if status != 200 or doc.get("issuer") != self.issuer:
                raise ProviderError("discovery_failed", f"{self.issuer} answered {status} to discovery")
            self._discovery = doc
        return self._discovery

    @property
    def fhir_base(self) -> str:
        return f"{self.issuer}/fhir/R4"

    def jwks(self, refresh: bool = False) -> jwk.JWKSet:
        with self._lock:
            if self._jwks is None or refresh:
                status, doc = http_json(self.discovery["jwks_uri"])
                if status != 200:
                    raise ProviderError("jwks_failed", f"JWK Set answered {status}")
                self._jwks = jwk.JWKSet.from_json(json.dumps(doc))
            return self._jwks

    def verify_id_token(self, id_token: str, client_id: str, nonce: str | None) -> dict[str, Any]:
        """Signature (JWK Set), ``iss``, ``aud``, ``exp`` and ``nonce`` (OIDC Core §3.1.3.7)."""
        header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "==="))
        keys = self.jwks()
        if header.get("kid") and keys.get_key(header["kid"]) is None:
            keys = self.jwks(refresh=True)  # the provider rotated its keys since we last looked
        try:
            token = jwt.JWT(jwt=id_token, key=keys, algs=["RS256", "ES256", "ES384"],
                            check_claims={"iss": self.issuer, "aud": client_id, "exp": None})
        except Exception as exc:  # jwcrypto raises several types; all mean "not a valid ID token"
            raise ProviderError("invalid_id_token", str(exc)) from exc
        claims = json.loads(token.claims)
        if nonce is not None and claims.get("nonce") != nonce:
            raise ProviderError("invalid_id_token", "the nonce does not match this sign-in")
        return claims

    def token(self, form: dict[str, str]) -> dict[str, Any]:
        status, body = http_json(self.discovery["token_endpoint"], form=form)
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            body = body if isinstance(body, dict) else {}
            raise ProviderError(body.get("error", "server_error"), body.get("error_description", ""), status)
        return body


@dataclass
class Session:
    """One browser's state: the pending authorization request, then the tokens and what they got."""

    pending: dict[str, str] | None = None
    tokens: dict[str, Any] | None = None
    id_claims: dict[str, Any] = field(default_factory=dict)
    launch: dict[str, str] | None = None
    refreshed: int = 0
    logout_state: str | None = None


class DemoClient:
    """The WSGI application."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.provider = Provider(config.issuer)
        self.sessions: dict[str, Session] = {}
        self.routes: dict[str, Callable[[Environ, Session], tuple[str, list[tuple[str, str]], str]]] = {
            "/": self.home, "/login": self.login, "/callback": self.callback, "/refresh": self.refresh,
            "/logout": self.logout, "/signed-out": self.signed_out, "/launch": self.ehr_launch,
        }

    # --- WSGI plumbing -------------------------------------------------------------------------
    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        sid = cookie[COOKIE].value if COOKIE in cookie else ""
        headers: list[tuple[str, str]] = []
        if sid not in self.sessions:
            sid = secrets.token_urlsafe(32)
            self.sessions[sid] = Session()
            headers.append(("Set-Cookie", f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax"))
        handler = self.routes.get(environ.get("PATH_INFO", "/"))
        if handler is None:
            status, extra, body = "404 Not Found", [], page("Not found", "<p>No such page.</p>")
        elif handler in (self.refresh, self.logout) and environ["REQUEST_METHOD"] != "POST":
            status, extra, body = "405 Method Not Allowed", [("Allow", "POST")], page("Use the buttons", "")
        else:
            try:
                status, extra, body = handler(environ, self.sessions[sid])
            except ProviderError as exc:
                status, extra, body = "200 OK", [], error_page(exc.error, exc.description)
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                                ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
                                *headers, *extra])
        return [body.encode()]

    @staticmethod
    def query(environ: Environ) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))

    @staticmethod
    def redirect(location: str) -> tuple[str, list[tuple[str, str]], str]:
        return "302 Found", [("Location", location)], ""

    # --- pages ------------------------------------------------------------------------------------
    def home(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        if session.tokens is None:
            return "200 OK", [], page("Demo Health App", f"""
<p class="lead">A third-party healthcare app. It knows nothing about you until you sign in with your
provider at <code>{esc(self.config.issuer)}</code> and allow it to read your record.</p>
<form action="/login" method="get"><button class="primary" id="sign-in">Sign in</button></form>
<p class="muted">Client <code>{esc(self.config.client_id)}</code> · authorization code with PKCE S256,
<code>state</code> and <code>nonce</code> · scopes <code>{esc(self.config.scope)}</code></p>""")
        return "200 OK", [], self.signed_in_page(session)

    def login(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        return self.redirect(self.authorization_url(session, self.config.scope))

    def authorization_url(self, session: Session, scope: str, **extra: str) -> str:
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        session.pending = {"state": state, "nonce": nonce, "verifier": verifier, **extra}
        params = {"response_type": "code", "client_id": self.config.client_id,
                  "redirect_uri": self.config.redirect_uri, "scope": scope, "state": state, "nonce": nonce,
                  "code_challenge": challenge, "code_challenge_method": "S256", **extra}
        return f"{self.provider.discovery['authorization_endpoint']}?{urllib.parse.urlencode(params)}"

    def ehr_launch(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        """SMART EHR launch: ``launch_uri?iss=…&launch=…``; only our own provider's FHIR base is trusted."""
        params = self.query(environ)
        iss, launch = params.get("iss", ""), params.get("launch", "")
        if iss.rstrip("/") != self.provider.fhir_base or not launch:
            return "400 Bad Request", [], error_page(
                "unknown_launch", f"This app only launches from {self.provider.fhir_base}; it was opened from "
                                  f"{iss or 'nowhere'}.")
        status, smart = http_json(f"{self.provider.fhir_base}/.well-known/smart-configuration")
        if status != 200 or "launch-ehr" not in smart.get("capabilities", []):
            raise ProviderError("launch_unsupported", "the FHIR server does not offer EHR launch")
        return self.redirect(self.authorization_url(session, self.config.launch_scope, launch=launch, aud=iss))

    def callback(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        params = self.query(environ)
        pending, session.pending = session.pending, None  # one answer per request, whatever it says
        if pending is None or not secrets.compare_digest(params.get("state", ""), pending["state"]):
            return "400 Bad Request", [], error_page("state_mismatch", "state does not match a pending sign-in")
        if params.get("iss") and params["iss"] != self.config.issuer:
            return "400 Bad Request", [], error_page("issuer_mismatch", f"iss={params['iss']}")
        if "error" in params:
            return "200 OK", [], error_page(params["error"], params.get("error_description", ""))
        tokens = self.provider.token({
            "grant_type": "authorization_code", "code": params.get("code", ""), "client_id": self.config.client_id,
            "redirect_uri": self.config.redirect_uri, "code_verifier": pending["verifier"]})
        session.id_claims = self.provider.verify_id_token(tokens["id_token"], self.config.client_id,
                                                          pending["nonce"])
        session.tokens, session.refreshed = tokens, 0
        session.launch = {"launch": pending["launch"]} if "launch" in pending else None
        return self.redirect("/")

    def refresh(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        if not session.tokens or not session.tokens.get("refresh_token"):
            return self.redirect("/")
        tokens = self.provider.token({"grant_type": "refresh_token", "client_id": self.config.client_id,
                                      "refresh_token": session.tokens["refresh_token"]})
        if tokens.get("id_token"):
            session.id_claims = self.provider.verify_id_token(tokens["id_token"], self.config.client_id, None)
        session.tokens = {**session.tokens, **tokens}
        session.refreshed += 1
        return self.redirect("/")

    def logout(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        """RP-initiated logout: forget the tokens here, then let the provider end its session too."""
        id_token = (session.tokens or {}).get("id_token", "")
        session.tokens, session.id_claims, session.launch = None, {}, None
        session.logout_state = secrets.token_urlsafe(16)
        params = {"id_token_hint": id_token, "post_logout_redirect_uri": self.config.post_logout_redirect_uri,
                  "client_id": self.config.client_id, "state": session.logout_state}
        return self.redirect(f"{self.provider.discovery['end_session_endpoint']}?{urllib.parse.urlencode(params)}")

    def signed_out(self, environ: Environ, session: Session) -> tuple[str, list[tuple[str, str]], str]:
        expected, session.logout_state = session.logout_state, None
        if expected is None or not secrets.compare_digest(self.query(environ).get("state", ""), expected):
            return "400 Bad Request", [], error_page("state_mismatch", "state does not match a pending sign-out")
        return "200 OK", [], page("Signed out", """
<p class="lead" id="signed-out">You are signed out of Demo Health App and of your provider. The app's
tokens were revoked: they no longer open your record.</p>
<form action="/login" method="get"><button class="primary">Sign in again</button></form>""")

    # --- the signed-in page ---------------------------------------------------------------------
    def signed_in_page(self, session: Session) -> str:
        tokens = session.tokens or {}
        access = tokens["access_token"]
        claims = session.id_claims
        scopes = tokens.get("scope", "").split()
        status, userinfo = http_json(self.discovery_url("userinfo_endpoint"), token=access)
        context_rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(tokens[k])}</code></td></tr>"
                               for k in ("project", "profile", "patient", "encounter", "need_patient_banner",
                                         "expires_in", "token_type") if k in tokens)
        name = claims.get("name") or " ".join(filter(None, [claims.get("given_name"), claims.get("family_name")]))
        banner = ""
        if session.launch:
            banner = (f'<p class="banner" id="launch-banner">Launched from your EHR with patient context '
                      f'<code>{esc(tokens.get("patient", "—"))}</code>.</p>')
        refreshed = (f'<p class="ok" id="refreshed">Tokens refreshed {session.refreshed}× — the refresh token '
                     f'was rotated each time.</p>') if session.refreshed else ""
        return page(f"Welcome, {name or claims.get('sub', '')}", f"""{banner}{refreshed}
<div class="actions">
  <form action="/refresh" method="post"><button id="refresh"{'' if tokens.get('refresh_token') else ' disabled'}>
    Refresh tokens</button></form>
  <form action="/logout" method="post"><button id="sign-out">Sign out</button></form>
</div>
<section><h2>Your health record (FHIR)</h2>{self.fhir_section(tokens)}</section>
<section><h2>Access token</h2>
<p>Scopes granted: {''.join(f'<span class="chip">{esc(s)}</span>' for s in scopes) or '<em>none</em>'}</p>
<table id="token-fields">{context_rows}</table></section>
<section><h2>ID token claims <span class="muted">(signature, issuer, audience, expiry and nonce checked)
</span></h2>{claims_table(claims, "id-claims")}</section>
<section><h2>Userinfo <span class="muted">(HTTP {status})</span></h2>{claims_table(userinfo, "userinfo")}</section>
""")

    def discovery_url(self, name: str) -> str:
        return self.provider.discovery[name]

    def fhir_section(self, tokens: dict[str, Any]) -> str:
        """The Patient and their Observations, or (a Practitioner without patient context) the patients."""
        access, base = tokens["access_token"], self.provider.fhir_base
        patient_id = tokens.get("patient")
        profile = reference(tokens.get("profile"))
        if not patient_id and profile.startswith("Patient/"):
            patient_id = profile.split("/", 1)[1]
        if patient_id:
            status, patient = http_json(f"{base}/Patient/{urllib.parse.quote(patient_id)}", token=access)
            if status != 200:
                return outcome_html(status, patient)
            _, observations = http_json(f"{base}/Observation?subject=Patient/{urllib.parse.quote(patient_id)}"
                                        f"&_count=20", token=access)
            rows = "".join(
                f"<tr><td>{esc(r.get('code', {}).get('text') or coding_display(r.get('code')))}</td>"
                f"<td>{esc(quantity(r))}</td><td>{esc(r.get('effectiveDateTime', ''))}</td></tr>"
                for r in resources(observations))
            return (f'<div id="fhir-patient"><p><strong>{esc(human_name(patient))}</strong> · born '
                    f'{esc(patient.get("birthDate", "unknown"))} · <code>Patient/{esc(patient_id)}</code></p>'
                    f'<table id="observations"><tr><th>Observation</th><th>Value</th><th>When</th></tr>{rows}'
                    f'</table></div>')
        status, bundle = http_json(f"{base}/Patient?_count=20", token=access)
        if status != 200:
            return outcome_html(status, bundle)
        rows = "".join(f"<tr><td>{esc(human_name(r))}</td><td>{esc(r.get('birthDate', ''))}</td>"
                       f"<td><code>Patient/{esc(r.get('id', ''))}</code></td></tr>" for r in resources(bundle))
        return (f'<p>Your patients ({esc(bundle.get("total", len(resources(bundle))))}):</p>'
                f'<table id="patients"><tr><th>Name</th><th>Born</th><th>Reference</th></tr>{rows}</table>')


# --- HTML helpers -----------------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value))


def reference(value: Any) -> str:
    """Medplum's token response gives ``project`` and ``profile`` as FHIR References."""
    return value.get("reference", "") if isinstance(value, dict) else str(value or "")


def resources(bundle: Any) -> list[dict[str, Any]]:
    return [e.get("resource", {}) for e in (bundle or {}).get("entry", [])] if isinstance(bundle, dict) else []


def human_name(resource: dict[str, Any]) -> str:
    for name in resource.get("name", []):
        return name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return resource.get("id", "")


def coding_display(concept: Any) -> str:
    for coding in (concept or {}).get("coding", []):
        return coding.get("display") or coding.get("code", "")
    return ""


def quantity(observation: dict[str, Any]) -> str:
    value = observation.get("valueQuantity")
    return f"{value.get('value')} {value.get('unit', '')}".strip() if value else ""


def outcome_html(status: int, body: Any) -> str:
    issues = (body or {}).get("issue", []) if isinstance(body, dict) else []
    text = "; ".join(i.get("details", {}).get("text") or i.get("diagnostics", "") for i in issues)
    return f'<p class="error">The FHIR server answered HTTP {status}: {esc(text or "no details")}</p>'


def claims_table(claims: Any, table_id: str) -> str:
    if not isinstance(claims, dict):
        return f"<pre>{esc(claims)}</pre>"
    rows = "".join(f'<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>' for k, v in claims.items())
    return f'<table id="{table_id}">{rows}</table>'


def error_page(error: str, description: str) -> str:
    title, advice = FRIENDLY_ERRORS.get(error, ("The sign-in did not work",
                                                "The provider refused the request. Please try again."))
    return page(title, f"""<p class="lead error" id="error">{esc(advice)}</p>
<p class="muted">Details for support: <code id="error-code">{esc(error)}</code>
{f' — {esc(description)}' if description else ''}</p>
<form action="/login" method="get"><button class="primary">Sign in again</button></form>
<p><a href="/">Back to the app</a></p>""")


def page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · Demo Health App</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2733; background: #f4f7fa; }}
header {{ background: #0b6e4f; color: #fff; padding: 12px 28px; font-weight: 600; }}
main {{ max-width: 860px; margin: 0 auto; padding: 8px 28px 28px; }}
h1 {{ font-size: 24px; }} h2 {{ font-size: 17px; margin-top: 24px; }}
section {{ background: #fff; border: 1px solid #dde3ea; border-radius: 8px; padding: 4px 16px 12px; margin: 14px 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ text-align: left; padding: 3px 8px; border-bottom: 1px solid #edf0f3; vertical-align: top; }}
th {{ width: 30%; color: #52606d; font-weight: 500; }} code {{ word-break: break-all; }}
button {{ font: inherit; padding: 7px 16px; border-radius: 6px; border: 1px solid #9aa5b1; background: #fff;
          cursor: pointer; }}
button.primary {{ background: #0b6e4f; color: #fff; border-color: #0b6e4f; font-weight: 600; }}
.actions {{ display: flex; gap: 10px; }} .muted {{ color: #616e7c; font-size: 13px; }}
.lead {{ font-size: 16px; }} .error {{ color: #a61b1b; }} .ok {{ color: #0b6e4f; }}
.banner {{ background: #fff7d6; border: 1px solid #e9c46a; padding: 8px 12px; border-radius: 6px; }}
.chip {{ display: inline-block; background: #e3f2ec; border-radius: 10px; padding: 1px 9px; margin: 2px;
         font-size: 13px; }}
</style></head>
<body><header>Demo Health App</header><main><h1>{esc(title)}</h1>
{body}
</main></body></html>"""


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        sys.stderr.write(f"demo-client {time.strftime('%H:%M:%S')} {format % args}\n")


def serve(config: Config, host: str = "127.0.0.1", port: int = 8888) -> None:
    with make_server(host, port, DemoClient(config), server_class=ThreadingWSGIServer,
                     handler_class=QuietHandler) as server:
        print(f"Demo Health App on {config.base_url}/ (provider {config.issuer})", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    cfg = Config.from_env()
    serve(cfg, port=int(os.environ.get("DEMO_CLIENT_PORT", "8888")))
