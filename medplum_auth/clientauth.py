"""Client authentication for endpoints outside oauthlib's token endpoint (introspect, revoke).

It delegates to the validator, so every endpoint accepts exactly the same client credentials.
"""

from __future__ import annotations

from django.http import HttpRequest
from oauthlib.common import Request

from .models import ClientApplication
from .server import get_server


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
