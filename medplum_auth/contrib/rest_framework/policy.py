"""The effective policy of an access token (medplum.md §3.2, §3.4, §1.9).

* User logins: the membership's access policy (no policy = full access, Medplum's legacy
  default) with the membership's ``%patient``/``%profile`` parameters, and the access policy of
  the client the user signed in through (the login gets only what both allow).
* ``client_credentials`` logins: the client's own access policy (no policy = full access).
* Either way intersected with the token's SMART scopes; ``patient/`` scopes are confined to
  the patient context (the SMART launch patient, else a Patient profile's own reference).

This module has no DRF imports; it sits here because only resource servers need it.
"""

from __future__ import annotations

from medplum_auth.access import EffectivePolicy, login_inputs
from medplum_auth.bearer import AccessContext


def patient_context(context: AccessContext) -> str | None:
    """``Patient/<id>`` the token acts for, if any: the SMART launch patient (EHR launch or the
    standalone picker), else the signed-in Patient's own profile."""
    return context.login.patient_context


def effective_policy_for(context: AccessContext) -> EffectivePolicy:
    """Compile the policy that decides what ``context``'s token may do."""
    login = context.login
    if login.resource_scopes_withheld:
        return EffectivePolicy([])  # the user allowed the app none of the data it asked for
    if login.membership_id:
        return login_inputs(membership=login.membership, client=login.client).compile(
            context.scopes, login.launch_patient)
    if login.user_id:
        # A user login without a chosen profile has no place in the project: nothing is allowed.
        return EffectivePolicy([])
    return login_inputs(client=login.client).compile(context.scopes)
