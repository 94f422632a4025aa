"""A DPoP client for the tests (RFC 9449 §4): keys and proofs made with jwcrypto, independently
of the server's own JWS code in ``medplum_auth.jws``/``medplum_auth.dpop``."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any

from jwcrypto import jwk, jws

TESTSERVER = "http://testserver"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DPoPKey:
    """A client key pair that signs proofs; ``jkt`` is its RFC 7638 thumbprint (jwcrypto's)."""

    def __init__(self, alg: str = "ES256"):
        self.alg = alg
        if alg.startswith("ES"):
            self.key = jwk.JWK.generate(kty="EC", crv={"ES256": "P-256", "ES384": "P-384"}[alg])
        else:
            self.key = jwk.JWK.generate(kty="RSA", size=2048)

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()

    @property
    def public_jwk(self) -> dict[str, Any]:
        return json.loads(self.key.export_public())

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None,
              iat: float | None = None, jti: str | None = None, header: dict[str, Any] | None = None,
              claims: dict[str, Any] | None = None, signer: DPoPKey | None = None) -> str:
        """A proof for ``method url`` (``url`` relative to the test server unless absolute)."""
        protected = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk, **(header or {})}
        payload: dict[str, Any] = {"jti": jti or str(uuid.uuid4()), "htm": method,
                                   "htu": url if "://" in url else TESTSERVER + url,
                                   "iat": int(time.time()) if iat is None else iat}
        if access_token is not None:
            payload["ath"] = b64(hashlib.sha256(access_token.encode()).digest())
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims or {})
        token = jws.JWS(json.dumps(payload))
        token.add_signature((signer or self).key, alg=protected["alg"], protected=json.dumps(protected))
        return token.serialize(compact=True)


def unsigned_proof(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x") -> str:
    """A compact JWS with any header (jwcrypto refuses ``none`` and some others)."""
    return ".".join(b64(part) for part in (json.dumps(header).encode(), json.dumps(claims).encode(), signature))
