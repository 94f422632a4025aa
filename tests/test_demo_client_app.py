"""The demo client app without a provider: a readable page, never a 500 (``examples/demo_client``)."""

from __future__ import annotations

import socket
from wsgiref.util import setup_testing_defaults

from examples.demo_client.app import Config, DemoClient


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sign_in_while_the_provider_is_down_explains_itself() -> None:
    issuer = f"http://127.0.0.1:{closed_port()}"
    app = DemoClient(Config(issuer=issuer, client_id="medplum-demo-public", base_url="http://127.0.0.1:8888"))
    environ: dict = {"PATH_INFO": "/login", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    answer: dict = {}
    body = b"".join(app(environ, lambda status, headers: answer.update(status=status, headers=headers)))
    assert answer["status"] == "200 OK"
    text = body.decode()
    assert "cannot be reached" in text and f"{issuer}/.well-known/openid-configuration" in text
