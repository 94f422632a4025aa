"""Settings values a host site takes over in its ``settings.py`` (pure constants: importable
before the apps load).

:data:`OAUTH2_PROVIDER` is django-oauth-toolkit's configuration with every RFC 9700 gate on.
medplum_auth does not depend on it for its own endpoints: its token endpoint serves only the
code, refresh-token and client-credentials grants, PKCE is S256 only, codes and refresh tokens
are stored as digests and a replayed refresh token revokes its family, whatever
``OAUTH2_PROVIDER`` says. The dict keeps DOT's own views (if a site includes them) as strict and
its ``check --deploy`` quiet.
"""

from __future__ import annotations

from typing import Any

OAUTH2_PROVIDER: dict[str, Any] = {
    "PKCE_REQUIRED": True,
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # DOT's own redirect checks are not used: medplum_auth.validators decides (https, plus
    # loopback http per RFC 8252). Listing only https keeps DOT's deploy check (E003) quiet.
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
}
