"""Client authentication for endpoints outside oauthlib's token endpoint (introspect, revoke),
and the failure throttle shared by ``/oauth2/token``, ``/oauth2/introspect`` and ``/oauth2/revoke``.

Authentication delegates to the validator, so every endpoint accepts exactly the same client
credentials.
"""

from __future__ import annotations

import base64
import binascii
import logging
from urllib.parse import unquote_plus

from django.http import HttpRequest
from oauthlib.common import Request

from . import assertions, audit, throttle
from .conf import auth_settings
from .models import ClientApplication
from .server import get_server

log = logging.getLogger("medplum_auth.audit")


def authenticate_client(request: HttpRequest, allow_public: bool) -> tuple[ClientApplication | None, bool]:
    """``(client, used_basic)``: a confidential client by secret, or a public one by ``client_id``."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if "HTTP_AUTHORIZATION" in request.META:
        headers["Authorization"] = request.META["HTTP_AUTHORIZATION"]
    try:
        body = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return None, False
    oauth_request = Request(request.build_absolute_uri(request.path), "POST", body, headers)
    validator = get_server().request_validator
    used_basic = headers.get("Authorization", "").lower().startswith("basic ")
    if validator.authenticate_client(oauth_request):
        return oauth_request.client, used_basic
    if allow_public and not used_basic and not oauth_request.client_secret and oauth_request.client_id:
        oauth_request.client = None
        if validator.authenticate_client_id(oauth_request.client_id, oauth_request):
            return oauth_request.client, False
    return None, used_basic


def claimed_client_id(request: HttpRequest) -> str:
    """The client id a request names (Basic user, ``client_id``, or an assertion's ``iss``), unverified.

    Only for throttling: it says whose failure counter a request uses, never who the client is.
    """
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return unquote_plus(base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return ""
    # Only a form body (RFC 6749 §2.3.1): reading a multipart one here would consume the stream.
    form = request.POST if request.content_type == "application/x-www-form-urlencoded" else {}
    client_id = form.get("client_id")
    if client_id:
        return client_id
    assertion = form.get("client_assertion")
    return (assertions.client_id_of(assertion) or "") if assertion else ""


def failure_counters(request: HttpRequest) -> list[throttle.Counter]:
    """The counters of failed client authentication and bad grants for this request's source.

    Per client id *from one address* (as sign-in counts per email and address) and per address,
    with a higher limit: anyone can name a client id, so a counter per client id alone would let
    one attacker lock a real client out everywhere; and one client's flood must not reach another
    client's counter. Client secrets, codes and refresh tokens carry ≥ 128 random bits, so what this
    defends is the server and the audit log, not the secrets.
    """
    window = int(auth_settings.TOKEN_FAILURE_WINDOW)
    address = audit.client_address(request) or "-"
    counters = [throttle.Counter("token-failures-ip", (address,), int(auth_settings.TOKEN_IP_MAX_FAILURES), window)]
    client_id = claimed_client_id(request)
    if client_id:
        counters.insert(0, throttle.Counter("token-failures-client", (client_id, address),
                                            int(auth_settings.TOKEN_CLIENT_MAX_FAILURES), window))
    return counters


def record_failure(request: HttpRequest, counters: list[throttle.Counter], error: str) -> None:
    """Count one ``invalid_client`` or ``invalid_grant``; log once when a limit is reached."""
    for counter in throttle.record_failure(counters):
        log.warning("token endpoint throttled path=%s error=%s counter=%s client_id=%r remote_addr=%s window=%d",
                    request.path, error, counter.scope, claimed_client_id(request),
                    audit.client_address(request), counter.window)
