"""The oauthlib server: only the code flow (OIDC-aware), refresh and client credentials.

Unlike oauthlib's all-in-one ``Server``, nothing else is wired in: no implicit, hybrid,
password or device grants, and PKCE accepts ``S256`` only (SMART 2.2, RFC 9700 §2.1.1).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from oauthlib.oauth2.rfc6749.endpoints import AuthorizationEndpoint, TokenEndpoint
from oauthlib.oauth2.rfc6749.grant_types import AuthorizationCodeGrant as OAuth2AuthorizationCodeGrant
from oauthlib.oauth2.rfc6749.grant_types import ClientCredentialsGrant
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256
from oauthlib.oauth2.rfc6749.tokens import BearerToken
from oauthlib.openid.connect.core.grant_types import AuthorizationCodeGrant, RefreshTokenGrant
from oauthlib.openid.connect.core.grant_types.dispatchers import (
    AuthorizationCodeGrantDispatcher,
    AuthorizationTokenGrantDispatcher,
)

from .oauth2_validators import MedplumOAuth2Validator, generate_refresh_token

S256_ONLY = {"S256": code_challenge_method_s256}


class Server(AuthorizationEndpoint, TokenEndpoint):
    def __init__(self, request_validator: MedplumOAuth2Validator, *args: Any, **kwargs: Any):
        self.request_validator = request_validator
        oauth2_code = OAuth2AuthorizationCodeGrant(request_validator)
        oidc_code = AuthorizationCodeGrant(request_validator)
        for grant in (oauth2_code, oidc_code.proxy_target):
            grant._code_challenge_methods = S256_ONLY
        refresh = RefreshTokenGrant(request_validator)
        bearer = BearerToken(
            request_validator,
            token_generator=request_validator.generate_access_token,
            expires_in=request_validator.access_token_lifetime,
            refresh_token_generator=generate_refresh_token,
        )
        AuthorizationEndpoint.__init__(
            self,
            default_response_type="code",
            response_types={"code": AuthorizationCodeGrantDispatcher(default_grant=oauth2_code, oidc_grant=oidc_code)},
            default_token_type=bearer,
        )
        TokenEndpoint.__init__(
            self,
            default_grant_type="authorization_code",
            grant_types={
                "authorization_code": AuthorizationTokenGrantDispatcher(
                    request_validator, default_grant=oauth2_code, oidc_grant=oidc_code),
                "refresh_token": refresh,
                "client_credentials": ClientCredentialsGrant(request_validator),
            },
            default_token_type=bearer,
        )


@lru_cache(maxsize=1)
def get_server() -> Server:
    """One server per process: it is stateless; every request gets its own oauthlib Request."""
    return Server(MedplumOAuth2Validator())
