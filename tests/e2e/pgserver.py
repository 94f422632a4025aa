"""A throwaway PostgreSQL server (``initdb`` + ``pg_ctl`` in a temporary directory) that a test may
stop and start without touching the shared cluster other tests and engineers use.

As root (CI), the server runs as the ``postgres`` system user (``initdb`` refuses root); otherwise
as the current user. Trust authentication on 127.0.0.1 and a private socket directory; ``fsync``
off (nothing here needs to survive a crash).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def pg_bindir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` (Debian: ``/usr/lib/postgresql/<major>/bin``)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    datadir: Path
    port: int
    user: str | None  # the system user to run as (None: the current one)
    log: Path

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise subprocess.SubprocessError(f"{' '.join(command)} exited with {result.returncode}: "
                                             f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir} -c fsync=off " \
                  "-c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Fast shutdown (as ``pg_ctlcluster stop``): open connections are terminated."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def createdb(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "medplum", name)

    def database(self, name: str) -> dict[str, object]:
        """A ``DATABASES`` entry for database ``name`` of this server."""
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name, "USER": "medplum", "PASSWORD": "",
                "HOST": "127.0.0.1", "PORT": str(self.port), "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": False,
                "ATOMIC_REQUESTS": False, "AUTOCOMMIT": True, "OPTIONS": {}, "TIME_ZONE": None}


@contextlib.contextmanager
def throwaway_server(bindir: Path) -> Iterator[PgServer]:
    """A new cluster (superuser ``medplum``, trust auth) running until the block ends, then deleted."""
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="medplum-pg-"))
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = PgServer(bindir=bindir, datadir=root / "data", port=_free_port(), user=user, log=root / "server.log")
        server._run("initdb", "-D", str(server.datadir), "-U", "medplum", "-A", "trust", "-E", "UTF8",
                    "--no-sync", "--no-instructions")
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
