"""Security keys and passkeys as a second factor (W3C WebAuthn Level 2, through ``webauthn``).

Registration and authentication are two round trips each: the server makes options with a
random challenge (kept server-side, in the session, by the caller), the browser answers with
``navigator.credentials.create()`` / ``get()``, and the answer is verified here against that
challenge, the relying party id (``WEBAUTHN_RP_ID``, default the host of ``ISSUER``) and the
origin of the sign-in pages (``ISSUER``'s). A signature counter that does not move forward (a
cloned authenticator) is refused. Only the public key is stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import webauthn
from django.utils import timezone
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from . import jsonbody, mfa
from .conf import auth_settings
from .models import WebAuthnCredential


def rp_id() -> str:
    return str(auth_settings.WEBAUTHN_RP_ID or urlsplit(auth_settings.ISSUER).hostname or "localhost")


def expected_origin() -> str:
    parts = urlsplit(auth_settings.ISSUER)
    return f"{parts.scheme}://{parts.netloc}"


def _descriptors(user: Any) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=webauthn.base64url_to_bytes(c.credential_id))
            for c in WebAuthnCredential.objects.filter(user=user)]


def registration_options(user: Any) -> tuple[str, str]:
    """``(options JSON for navigator.credentials.create(), challenge)`` to register a key for ``user``."""
    options = webauthn.generate_registration_options(
        rp_id=rp_id(), rp_name=str(auth_settings.WEBAUTHN_RP_NAME or auth_settings.MFA_ISSUER_NAME),
        user_id=str(user.pk).encode(), user_name=getattr(user, "email", "") or user.get_username(),
        user_display_name=user.get_full_name() or user.get_username(),
        exclude_credentials=_descriptors(user),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED, user_verification=UserVerificationRequirement.PREFERRED),
    )
    return webauthn.options_to_json(options), bytes_to_base64url(options.challenge)


def _parse(credential: Any) -> dict[str, Any]:
    if isinstance(credential, str):
        try:
            credential = jsonbody.loads(credential)
        except ValueError:
            raise mfa.MfaError("The security key's answer is not valid.") from None
    if not isinstance(credential, dict) or not isinstance(credential.get("id"), str):
        raise mfa.MfaError("The security key's answer is not valid.")
    return credential


def register(user: Any, credential: Any, challenge: str, name: str = "") -> tuple[WebAuthnCredential, list[str]]:
    """Verify ``navigator.credentials.create()``'s answer and keep the key; the recovery codes
    made when it is the user's first second factor (else ``[]``)."""
    first = not mfa.is_enrolled(user)
    try:
        verified = webauthn.verify_registration_response(
            credential=_parse(credential), expected_challenge=webauthn.base64url_to_bytes(challenge),
            expected_rp_id=rp_id(), expected_origin=expected_origin())
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise mfa.MfaError("The security key could not be registered.") from exc
    credential_id = bytes_to_base64url(verified.credential_id)
    if WebAuthnCredential.objects.filter(credential_id=credential_id).exists():
        raise mfa.MfaError("This security key is already registered.")
    transports = _parse(credential).get("response", {}).get("transports") or []
    key = WebAuthnCredential.objects.create(
        user=user, credential_id=credential_id, public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count, name=(name or "Security key").strip()[:100],
        transports=" ".join(t for t in transports if isinstance(t, str))[:200])
    return key, (mfa.new_recovery_codes(user) if first else [])


def authentication_options(user: Any) -> tuple[str, str]:
    """``(options JSON for navigator.credentials.get(), challenge)`` for ``user``'s keys."""
    options = webauthn.generate_authentication_options(
        rp_id=rp_id(), allow_credentials=_descriptors(user), user_verification=UserVerificationRequirement.PREFERRED)
    return webauthn.options_to_json(options), bytes_to_base64url(options.challenge)


def authenticate(user: Any, credential: Any, challenge: str) -> str:
    """Verify ``navigator.credentials.get()``'s answer with one of ``user``'s keys: ``"hwk"``.

    Under the same per-user failure throttle as codes (:class:`mfa.Throttled`)."""

    def accept() -> str | None:
        try:
            answer = _parse(credential)
        except mfa.MfaError:
            return None
        key = WebAuthnCredential.objects.filter(user=user, credential_id=answer["id"]).first()
        if key is None or not challenge:
            return None
        try:
            verified = webauthn.verify_authentication_response(
                credential=answer, expected_challenge=webauthn.base64url_to_bytes(challenge),
                expected_rp_id=rp_id(), expected_origin=expected_origin(),
                credential_public_key=webauthn.base64url_to_bytes(key.public_key),
                credential_current_sign_count=key.sign_count)
        except (WebAuthnException, ValueError, TypeError, KeyError):
            return None
        # The counter must move forward (a conditional update also settles two racing answers).
        moved = WebAuthnCredential.objects.filter(pk=key.pk, sign_count=key.sign_count).update(
            sign_count=verified.new_sign_count, last_used_at=timezone.now())
        return "hwk" if moved == 1 else None

    return mfa.check(user, accept)
