"""The lookups every token, userinfo and API request makes, compiled once (:class:`CompiledLookup`).

Each is the queryset it names, with the same ``select_related``; the lookup methods bind the
key and run the SQL Django compiled for it the first time.
"""

from __future__ import annotations

from .models import ClientApplication, Login
from .queries import CompiledLookup

#: A client by ``client_id``, with its project.
client_by_client_id = CompiledLookup(
    ClientApplication, lambda: ClientApplication.objects.select_related("project"), keys=("client_id",))

_LOGIN_RELATED = ("project", "membership", "user")

#: A login by the digest of its authorization code, locked (a redemption is decided once).
login_by_code_for_update = CompiledLookup(
    Login, lambda: Login.objects.select_related(*_LOGIN_RELATED).select_for_update(of=("self",)),
    keys=("code_digest",))

#: A login by the digest of its current refresh token, locked (a rotation is decided once).
login_by_refresh_for_update = CompiledLookup(
    Login, lambda: Login.objects.select_related(*_LOGIN_RELATED).select_for_update(of=("self",)),
    keys=("refresh_digest",))
