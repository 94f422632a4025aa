"""Values shown exactly once (client secrets, set-password links), by Post/Redirect/Get.

Used by the Django admin's secret page and the Project Admin pages: the POST that makes the
value keeps it in the session **encrypted** under a fresh key that only the redirect URL
carries, and the session entry is named by a hash of that key. The one GET that follows pops
the entry and decrypts it; a reload finds nothing. Neither the session store nor the URL alone
reveals the value, and entries expire after :data:`DISPLAY_SECONDS`.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

SESSION_PREFIX = "medplum_auth.once."
#: How long a value waits in the session for its one GET.
DISPLAY_SECONDS = 300


def _session_key(token: str) -> str:
    return SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest()


@sensitive_variables("values")
def stash(request: HttpRequest, kind: str, object_id: Any, values: dict[str, Any]) -> str:
    """Keep ``values`` for one :func:`take` of the same ``kind`` and object; return the URL token."""
    token = Fernet.generate_key().decode()
    session = request.session
    now = time.time()
    for key in [k for k in session.keys() if k.startswith(SESSION_PREFIX)]:  # noqa: SIM118 (no __iter__)
        if session[key].get("expires", 0) <= now:
            del session[key]
    session[_session_key(token)] = {
        "kind": kind,
        "object": str(object_id),
        "expires": now + DISPLAY_SECONDS,
        "values": Fernet(token.encode()).encrypt(json.dumps(values).encode()).decode(),
    }
    return token


def take(request: HttpRequest, token: str, kind: str, object_id: Any) -> dict[str, Any] | None:
    """The values stashed under ``token``, once; ``None`` when already shown, expired or not ours."""
    entry = request.session.pop(_session_key(token), None)
    if not entry or entry.get("kind") != kind or entry.get("object") != str(object_id):
        return None
    if entry.get("expires", 0) <= time.time():
        return None
    try:
        values = json.loads(Fernet(token.encode()).decrypt(entry["values"].encode()))
    except (InvalidToken, KeyError, TypeError, ValueError):
        return None
    return values if isinstance(values, dict) else None
