"""Field validators shared by every surface (admin, Project Admin pages, CLI, services).

The rules and their messages live here once, so the admin form, the Project Admin form and
``medplum_create_client`` report the same thing for the same bad input.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .conf import SDK_REFRESH_GRACE_PERIOD, auth_settings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def validate_redirect_uri(uri: str, label: str = "Redirect URI") -> None:
    """RFC 6749 §3.1.2 and RFC 9700 §2.1: absolute, no fragment, ``https`` except loopback.

    ``http`` is accepted only for ``localhost``, ``127.0.0.1`` and ``[::1]`` (RFC 8252 §7.3)
    while ``ALLOW_LOOPBACK_HTTP_REDIRECTS`` is on. Wildcards are never accepted: redirect URIs
    are matched exactly, character for character.
    """

    def fail(message: str, code: str) -> ValidationError:
        return ValidationError(message, code=code, params={"label": label, "uri": uri})

    if not uri or uri != uri.strip():
        raise fail(_("%(label)s %(uri)r must not be empty or contain spaces."), "uri_whitespace")
    if any(ch.isspace() for ch in uri):
        raise fail(_("%(label)s %(uri)r contains a space. Enter one per line (a space inside a URI is "
                     "written %%20)."), "uri_whitespace")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in uri):  # PostgreSQL text cannot hold NUL either
        raise fail(_("%(label)s %(uri)r contains a control character."), "uri_control")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise fail(_("%(label)s %(uri)r is not a valid URL."), "uri_invalid") from None
    if not parts.scheme or not parts.hostname:
        raise fail(_("%(label)s %(uri)r must be an absolute URL (scheme and host)."), "uri_relative")
    if "#" in uri:
        raise fail(_("%(label)s %(uri)r must not contain a fragment (#…)."), "uri_fragment")
    if "*" in parts.netloc:
        raise fail(_("%(label)s %(uri)r must not contain a wildcard."), "uri_wildcard")
    if parts.username is not None or parts.password is not None:
        raise fail(_("%(label)s %(uri)r must not contain user credentials."), "uri_userinfo")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme == "http" and parts.hostname in LOOPBACK_HOSTS and auth_settings.ALLOW_LOOPBACK_HTTP_REDIRECTS:
        return
    raise fail(_("%(label)s %(uri)r must use https (http is allowed only for localhost, 127.0.0.1 and [::1])."),
               "uri_scheme")


def split_uris(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """URIs as entered: one per line (forms, the services) or a list (CLI); blank lines and repeats dropped.

    Lines are split on line breaks only: a line with a space in it stays one (invalid) URI, so
    ``validate_redirect_uri`` says so instead of silently registering its pieces as several URIs.
    """
    if not value:
        return []
    if isinstance(value, str):
        value = value.splitlines()
    seen: list[str] = []
    for uri in value:
        uri = uri.strip()
        if uri and uri not in seen:
            seen.append(uri)
    return seen


def stored_uris(value: str | None) -> list[str]:
    """The URIs of a stored field: one per line as ``clean()`` writes them, or space separated (DOT's format)."""
    return list(dict.fromkeys((value or "").split()))


def validate_redirect_uris(uris: list[str], label: str = "Redirect URI") -> None:
    """Validate each URI, reporting every bad one at once."""
    errors: list[ValidationError] = []
    for uri in uris:
        try:
            validate_redirect_uri(uri, label)
        except ValidationError as exc:
            errors.extend(exc.error_list)
    if errors:
        raise ValidationError(errors)


def validate_origin(origin: str) -> None:
    """A CORS origin: ``scheme://host[:port]`` with no path, https or loopback http."""
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.fragment:
        raise ValidationError(_("Allowed origin %(uri)r must be scheme://host[:port] with no path."),
                              code="origin_path", params={"uri": origin})
    validate_redirect_uri(origin, "Allowed origin")


def validate_access_token_lifetime(seconds: int | None) -> None:
    """A client's own access-token lifetime must exceed @medplum/core's ``refreshGracePeriod``.

    The SDK fetches a new token before every call while less than 300 s are left; shorter tokens
    make it loop. Empty (``None``) and 0 mean the default ``ACCESS_TOKEN_LIFETIME``.
    """
    if seconds and seconds <= SDK_REFRESH_GRACE_PERIOD:
        raise ValidationError(
            _("Use more than %(grace)s seconds, or leave empty for the default: @medplum/core treats a token as "
              "expired while less than its refreshGracePeriod (300 s) is left, so it would request a new token "
              "before every call (with client credentials, in an endless loop)."),
            code="lifetime_below_sdk_grace", params={"grace": SDK_REFRESH_GRACE_PERIOD})


def add_params(uri: str, params: dict[str, str | None]) -> str:
    """Append query parameters to a (registered) redirect URI, keeping its own query."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
