from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from medplum_auth.validators import (
    split_uris,
    stored_uris,
    validate_origin,
    validate_redirect_uri,
    validate_redirect_uris,
)

HTTPS_ONLY = "must use https (http is allowed only for localhost, 127.0.0.1 and [::1])."


@pytest.mark.spec("RFC 6749 §3.1.2")
@pytest.mark.parametrize("uri", [
    "https://app.example.org/callback",
    "https://app.example.org:8443/callback?tenant=a",
    "HTTPS://app.example.org/callback",
    "https://app.example.org/*/callback",  # a literal '*' in the path is matched exactly, not a wildcard
])
def test_https_redirect_uri_accepted(uri):
    assert validate_redirect_uri(uri) is None


@pytest.mark.spec("RFC 8252 §7.3")
@pytest.mark.parametrize("uri", [
    "http://localhost/callback",
    "http://localhost:3000/callback",
    "http://127.0.0.1:8888/cb",
    "http://[::1]/cb",
    "http://[::1]:9000/cb",
])
def test_loopback_http_redirect_uri_accepted(uri):
    assert validate_redirect_uri(uri) is None


@pytest.mark.spec("RFC 6749 §3.1.2")
@pytest.mark.parametrize(("uri", "code", "message"), [
    ("http://example.com/cb", "uri_scheme", f"Redirect URI 'http://example.com/cb' {HTTPS_ONLY}"),
    ("http://localhost.evil.example/cb", "uri_scheme",
     f"Redirect URI 'http://localhost.evil.example/cb' {HTTPS_ONLY}"),
    ("http://127.0.0.1.nip.io/cb", "uri_scheme", f"Redirect URI 'http://127.0.0.1.nip.io/cb' {HTTPS_ONLY}"),
    ("myapp://callback", "uri_scheme", f"Redirect URI 'myapp://callback' {HTTPS_ONLY}"),
    ("ftp://example.com/cb", "uri_scheme", f"Redirect URI 'ftp://example.com/cb' {HTTPS_ONLY}"),
    ("com.example.app:/oauth2redirect", "uri_relative",
     "Redirect URI 'com.example.app:/oauth2redirect' must be an absolute URL (scheme and host)."),
    ("/callback", "uri_relative", "Redirect URI '/callback' must be an absolute URL (scheme and host)."),
    ("app.example.org/callback", "uri_relative",
     "Redirect URI 'app.example.org/callback' must be an absolute URL (scheme and host)."),
    ("https:///callback", "uri_relative",
     "Redirect URI 'https:///callback' must be an absolute URL (scheme and host)."),
    ("https://app.example.org/cb#state", "uri_fragment",
     "Redirect URI 'https://app.example.org/cb#state' must not contain a fragment (#…)."),
    ("https://app.example.org/cb#", "uri_fragment",
     "Redirect URI 'https://app.example.org/cb#' must not contain a fragment (#…)."),
    ("https://*.example.org/cb", "uri_wildcard",
     "Redirect URI 'https://*.example.org/cb' must not contain a wildcard."),
    ("https://app.example.org:*/cb", "uri_invalid", "Redirect URI 'https://app.example.org:*/cb' is not a valid URL."),
    ("https://user:pass@app.example.org/cb", "uri_userinfo",
     "Redirect URI 'https://user:pass@app.example.org/cb' must not contain user credentials."),
    ("https://user@app.example.org/cb", "uri_userinfo",
     "Redirect URI 'https://user@app.example.org/cb' must not contain user credentials."),
    ("https://app.example.org/call back", "uri_whitespace",
     "Redirect URI 'https://app.example.org/call back' contains a space. Enter one per line (a space inside a "
     "URI is written %20)."),
    ("https://app.example.org/cb\n", "uri_whitespace",
     "Redirect URI 'https://app.example.org/cb\\n' must not be empty or contain spaces."),
    ("", "uri_whitespace", "Redirect URI '' must not be empty or contain spaces."),
    ("https://app.example.org:99999/cb", "uri_invalid",
     "Redirect URI 'https://app.example.org:99999/cb' is not a valid URL."),
    ("https://app.example.org:abc/cb", "uri_invalid",
     "Redirect URI 'https://app.example.org:abc/cb' is not a valid URL."),
    ("http://[::1/cb", "uri_invalid", "Redirect URI 'http://[::1/cb' is not a valid URL."),
])
def test_bad_redirect_uri_refused(uri, code, message):
    with pytest.raises(ValidationError) as exc:
        validate_redirect_uri(uri)
    assert exc.value.code == code
    assert exc.value.messages == [message]


def test_label_names_the_field_in_the_message():
    with pytest.raises(ValidationError) as exc:
        validate_redirect_uri("http://example.com/launch", "Launch URI")
    assert exc.value.messages == [f"Launch URI 'http://example.com/launch' {HTTPS_ONLY}"]


@pytest.mark.spec("RFC 8252 §7.3")
@pytest.mark.parametrize("uri", ["http://localhost/cb", "http://127.0.0.1:8888/cb", "http://[::1]/cb"])
def test_loopback_http_refused_when_disabled(uri):
    with override_settings(MEDPLUM_AUTH={"ALLOW_LOOPBACK_HTTP_REDIRECTS": False}):
        with pytest.raises(ValidationError) as exc:
            validate_redirect_uri(uri)
        assert exc.value.code == "uri_scheme"
        # https on a loopback host stays fine: only plain http is switched off.
        validate_redirect_uri(uri.replace("http://", "https://"))
    validate_redirect_uri(uri)  # the override is gone again


def test_validate_redirect_uris_reports_every_bad_uri():
    with pytest.raises(ValidationError) as exc:
        validate_redirect_uris(["https://ok.example.org/cb", "http://a.example.org/cb", "https://b.example.org/#x"])
    assert [e.code for e in exc.value.error_list] == ["uri_scheme", "uri_fragment"]
    assert exc.value.messages == [
        f"Redirect URI 'http://a.example.org/cb' {HTTPS_ONLY}",
        "Redirect URI 'https://b.example.org/#x' must not contain a fragment (#…).",
    ]


def test_validate_redirect_uris_accepts_empty_and_good_lists():
    assert validate_redirect_uris([]) is None
    assert validate_redirect_uris(["https://a.example.org/cb", "http://localhost/cb"]) is None


@pytest.mark.parametrize("origin", ["https://app.example.org", "https://app.example.org:8443", "http://localhost:3000"])
def test_origin_accepted(origin):
    assert validate_origin(origin) is None


@pytest.mark.parametrize(("origin", "code", "message"), [
    ("https://app.example.org/", "origin_path",
     "Allowed origin 'https://app.example.org/' must be scheme://host[:port] with no path."),
    ("https://app.example.org/app", "origin_path",
     "Allowed origin 'https://app.example.org/app' must be scheme://host[:port] with no path."),
    ("https://app.example.org?x=1", "origin_path",
     "Allowed origin 'https://app.example.org?x=1' must be scheme://host[:port] with no path."),
    ("http://app.example.org", "uri_scheme", f"Allowed origin 'http://app.example.org' {HTTPS_ONLY}"),
    ("https://*.example.org", "uri_wildcard", "Allowed origin 'https://*.example.org' must not contain a wildcard."),
    ("app.example.org", "origin_path", "Allowed origin 'app.example.org' must be scheme://host[:port] with no path."),
])
def test_bad_origin_refused(origin, code, message):
    with pytest.raises(ValidationError) as exc:
        validate_origin(origin)
    assert exc.value.code == code
    assert exc.value.messages == [message]


@pytest.mark.parametrize(("value", "expected"), [
    (None, []),
    ("", []),
    ([], []),
    ("https://a.example.org/cb", ["https://a.example.org/cb"]),
    ("https://a.example.org/cb\nhttps://b.example.org/cb", ["https://a.example.org/cb", "https://b.example.org/cb"]),
    ("https://a.example.org/cb\r\n  https://b.example.org/cb \r\nhttps://a.example.org/cb\n\n",
     ["https://a.example.org/cb", "https://b.example.org/cb"]),
    # Line breaks only: a line with spaces stays one URI, which validation then refuses.
    ("https://a.example.org/cb https://b.example.org/cb", ["https://a.example.org/cb https://b.example.org/cb"]),
    (["  https://b.example.org/cb ", "", "https://a.example.org/cb", "https://b.example.org/cb"],
     ["https://b.example.org/cb", "https://a.example.org/cb"]),
    (("https://a.example.org/cb", "https://a.example.org/cb"), ["https://a.example.org/cb"]),
])
def test_split_uris(value, expected):
    assert split_uris(value) == expected


def test_stored_uris_read_lines_and_dots_space_separated_format():
    assert stored_uris("https://a.example.org/cb\nhttps://b.example.org/cb") == [
        "https://a.example.org/cb", "https://b.example.org/cb"]
    assert stored_uris("https://a.example.org/cb https://b.example.org/cb https://a.example.org/cb") == [
        "https://a.example.org/cb", "https://b.example.org/cb"]
    assert stored_uris(None) == stored_uris("") == []


def test_split_uris_keeps_case_and_trailing_slash_distinct():
    assert split_uris("https://a.example.org/cb\nhttps://a.example.org/cb/\nhttps://a.example.org/CB") == [
        "https://a.example.org/cb", "https://a.example.org/cb/", "https://a.example.org/CB",
    ]
