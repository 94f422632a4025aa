"""Second factors: authenticator apps (TOTP, RFC 6238), recovery codes, and what a sign-in needs.

One module decides whether a user must present a second factor and checks it, for the HTML
sign-in, the JSON login API (Medplum's ``/auth/mfa/*``) and Project Admin alike. WebAuthn
security keys live in :mod:`medplum_auth.webauthn`; both count as a second factor here.

* A TOTP code is accepted once: the device remembers the time step of the last accepted code and
  a code of that step or an earlier one is refused (RFC 6238 §5.2), decided in one conditional
  UPDATE so two concurrent requests cannot both use it.
* Recovery codes are random, shown once, stored as SHA-256 digests and single use.
* ``amr`` values are RFC 8176's: ``pwd``, ``otp`` (authenticator app), ``hwk`` (security key),
  ``mfa`` (more than one factor).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import pyotp
import segno
from django.db import transaction
from django.utils import timezone
from pyotp.exceptions import OTPVerificationError

from . import throttle
from .conf import auth_settings
from .keys import decrypt_secret, encrypt_secret
from .models import Project, RecoveryCode, TotpDevice, WebAuthnCredential

SECRET_PURPOSE = "totp-secret"
TOTP_WINDOW = 1  # steps either side of now: ±30 s for clock drift
RECOVERY_CODE_GROUPS = 2  # "abcde-fghij": 2 × 5 base32 characters = 50 bits


class MfaError(Exception):
    """A second-factor step that cannot go on; ``str()`` is safe to show the user."""


class Throttled(MfaError):
    """Too many wrong codes for this user; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: int):
        super().__init__("Too many wrong codes. Try again later.")
        self.retry_after = retry_after


def _counter(user: Any) -> throttle.Counter:
    """Per user, whatever the address: the password is already known to whoever is guessing."""
    return throttle.Counter("mfa-failures", (str(user.pk),), int(auth_settings.MFA_MAX_FAILURES),
                            int(auth_settings.MFA_FAILURE_WINDOW))


def check(user: Any, accept: Any) -> Any:
    """Run ``accept()`` under the user's failure throttle; a falsy answer counts as a failure."""
    counter = _counter(user)
    wait = throttle.retry_after([counter])
    if wait is not None:
        raise Throttled(wait)
    result = accept()
    if not result:
        throttle.record_failure([counter])
        raise MfaError("Invalid token")
    throttle.clear([counter])
    return result


@dataclass(frozen=True)
class Enrollment:
    """An authenticator app being set up: the ``otpauth://`` URI and its QR code (PNG data URI)."""

    secret: str
    uri: str
    qr_code: str


def totp_device(user: Any) -> TotpDevice | None:
    return TotpDevice.objects.filter(user=user).first()


def factors(user: Any) -> set[str]:
    """The enrolled second factors of ``user``: ``otp`` and/or ``hwk``."""
    found = set()
    if TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists():
        found.add("otp")
    if WebAuthnCredential.objects.filter(user=user).exists():
        found.add("hwk")
    return found


def is_enrolled(user: Any) -> bool:
    return bool(factors(user))


def required_for(user: Any, project: Project | None = None) -> bool:
    """Whether ``user`` must present a second factor when signing in (to ``project``).

    Always once they have enrolled one; otherwise when the project, or any active project of
    theirs when none is given, requires MFA (they must then enroll first).
    """
    if is_enrolled(user):
        return True
    return enrollment_required(user, project)


def enrollment_required(user: Any, project: Project | None = None) -> bool:
    """Medplum's ``mfaEnrollRequired``: the project requires MFA and the user has none yet."""
    if is_enrolled(user):
        return False
    if project is not None:
        return bool(project.mfa_required)
    from .models import ProjectMembership

    return ProjectMembership.objects.filter(user=user, active=True, project__mfa_required=True).exists()


def _issuer_name() -> str:
    return str(auth_settings.MFA_ISSUER_NAME)


def start_totp(user: Any) -> Enrollment:
    """The enrollment of an authenticator app: a new secret until one is confirmed.

    Calling it again before confirming returns the same secret, so a page reload shows the same
    QR code. Enrolled users get :class:`MfaError`.
    """
    device = totp_device(user)
    if device is not None and device.confirmed_at is not None:
        raise MfaError("Already enrolled")
    if device is None:
        device = TotpDevice.objects.create(user=user, secret=encrypt_secret(pyotp.random_base32(), SECRET_PURPOSE))
    secret = decrypt_secret(device.secret, SECRET_PURPOSE)
    label = getattr(user, "email", "") or user.get_username()
    uri = pyotp.TOTP(secret).provisioning_uri(name=label, issuer_name=_issuer_name())
    return Enrollment(secret, uri, segno.make(uri, error="m").png_data_uri(scale=5, border=2))


def _accept_code(device: TotpDevice, token: Any) -> bool:
    """Check ``token`` against the device and use up its time step (no replay)."""
    if not isinstance(token, str):
        return False
    token = token.strip().replace(" ", "")
    if len(token) != 6 or not token.isdigit():
        return False
    totp = pyotp.TOTP(decrypt_secret(device.secret, SECRET_PURPOSE))
    try:
        step = totp.verify_and_get_timecode(token, valid_window=TOTP_WINDOW)  # constant-time compare
    except OTPVerificationError:
        return False
    # Conditional update: only one request can move the device past this step.
    return TotpDevice.objects.filter(pk=device.pk, last_step__lt=step).update(last_step=step) == 1


def confirm_totp(user: Any, token: Any) -> list[str]:
    """Finish enrolling the authenticator app with its first code; the new recovery codes."""
    device = totp_device(user)
    if device is None:
        raise MfaError("Secret not found")
    if device.confirmed_at is not None:
        raise MfaError("Already enrolled")
    check(user, lambda: _accept_code(device, token))
    with transaction.atomic():
        TotpDevice.objects.filter(pk=device.pk).update(confirmed_at=timezone.now())
        codes = new_recovery_codes(user)
    return codes


def verify_totp(user: Any, token: Any) -> bool:
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).first()
    return device is not None and _accept_code(device, token)


def _recovery_digest(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace(" ", "").encode()).hexdigest()


def new_recovery_codes(user: Any) -> list[str]:
    """Replace ``user``'s recovery codes with fresh ones, returned once (only digests are kept)."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    codes = ["-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(RECOVERY_CODE_GROUPS))
             for _ in range(int(auth_settings.MFA_RECOVERY_CODES))]
    with transaction.atomic():
        RecoveryCode.objects.filter(user=user).delete()
        RecoveryCode.objects.bulk_create(RecoveryCode(user=user, digest=_recovery_digest(c)) for c in codes)
    return codes


def use_recovery_code(user: Any, code: Any) -> bool:
    if not isinstance(code, str) or not 8 <= len(code.strip()) <= 20:
        return False
    return RecoveryCode.objects.filter(user=user, digest=_recovery_digest(code), used_at__isnull=True).update(
        used_at=timezone.now()) == 1


def remaining_recovery_codes(user: Any) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def verify_second_factor(user: Any, token: Any) -> str:
    """A TOTP code or a recovery code: the ``amr`` value it proves (``otp``, RFC 8176: a one-time
    password either way). :class:`MfaError` ("Invalid token") or :class:`Throttled` otherwise."""
    def accept() -> str | None:
        if verify_totp(user, token):
            return "otp"
        if isinstance(token, str) and "-" in token and use_recovery_code(user, token):
            return "otp"
        return None

    return check(user, accept)


def disable_totp(user: Any, token: Any) -> None:
    """Medplum ``/auth/mfa/disable``: a current code removes the authenticator app."""
    device = totp_device(user)
    if device is None:
        raise MfaError("Secret not found")
    if device.confirmed_at is None:
        raise MfaError("User not enrolled in MFA")
    check(user, lambda: _accept_code(device, token))
    with transaction.atomic():
        TotpDevice.objects.filter(user=user).delete()
        if not WebAuthnCredential.objects.filter(user=user).exists():
            RecoveryCode.objects.filter(user=user).delete()


def reset(user: Any) -> int:
    """Remove every second factor of ``user`` (an admin's reset); how many were removed."""
    with transaction.atomic():
        removed = TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).count()
        removed += WebAuthnCredential.objects.filter(user=user).count()
        TotpDevice.objects.filter(user=user).delete()
        WebAuthnCredential.objects.filter(user=user).delete()
        RecoveryCode.objects.filter(user=user).delete()
    return removed


def amr(*methods: str) -> str:
    """The ``amr`` of a sign-in with these methods, as stored on a Login (``pwd otp mfa``)."""
    values = list(dict.fromkeys(m for m in methods if m))
    if len(values) > 1:
        values.append("mfa")
    return " ".join(values)
