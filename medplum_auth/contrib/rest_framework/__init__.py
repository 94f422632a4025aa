"""Django REST framework classes for resource servers that accept this provider's tokens.

* :class:`~.authentication.BearerAuthentication`: ``Authorization: Bearer`` access tokens
  (signature, expiry, revocation; never ID tokens or refresh tokens).
* :class:`~.permissions.AccessPolicyPermission`: the token's effective policy (access policy ∩
  SMART scopes ∩ patient context) decides per resource type and interaction;
  :class:`~.permissions.SmartScopePermission` does the same from the scopes alone.
* :func:`~.exceptions.exception_handler`: every error as a FHIR ``OperationOutcome``.

Only this package imports DRF; ``medplum_auth`` itself never does.
"""
