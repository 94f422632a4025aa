"""A tiny round-robin HTTP reverse proxy (standard library), for the two-instance demo and test.

Each request goes to the next upstream in turn; an upstream that refuses the connection is
skipped for that request (so a killed instance costs no failed request). The answer carries
``X-Upstream: <index>`` so a test can see which instance served it, and ``served`` counts them.
Not for production: use nginx, HAProxy or your platform's load balancer (docs/production.md).
"""

from __future__ import annotations

import http.client
import itertools
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


class RoundRobinProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], upstreams: list[str] | None = None) -> None:
        super().__init__(address, ProxyHandler)
        self.upstreams: list[str] = list(upstreams or [])
        self.served: list[int] = []  # the upstream index of every answered request, in order
        self._turn = itertools.count()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def order(self) -> list[int]:
        """Upstream indexes to try for one request: the next in turn first."""
        with self._lock:
            start = next(self._turn) % len(self.upstreams)
        return [(start + i) % len(self.upstreams) for i in range(len(self.upstreams))]


class ProxyHandler(BaseHTTPRequestHandler):
    server: RoundRobinProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        for index in self.server.order():
            target = urlsplit(self.server.upstreams[index])
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                connection.close()
                continue  # that instance is gone: the next one answers
            connection.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Upstream", str(index))
            self.end_headers()
            self.wfile.write(payload)
            with self.server._lock:
                self.server.served.append(index)
            return
        self.send_error(502, "no upstream answered")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = forward


def main(argv: list[str]) -> None:
    """``proxy.py PORT UPSTREAM_URL…``"""
    server = RoundRobinProxy(("127.0.0.1", int(argv[0])), argv[1:])
    print(f"round-robin proxy on {server.url} → {', '.join(server.upstreams)}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
