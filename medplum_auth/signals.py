"""Signals sent by :mod:`medplum_auth.services`, for apps that keep data beside the identity model.

``member_invited(sender=ProjectMembership, membership, user, created_user, first_name, last_name)``
is sent inside the invite transaction; a receiver that raises rolls the invite back. The FHIR
API listens to it to create the profile resource (Patient, Practitioner, RelatedPerson).
"""

from django.dispatch import Signal

member_invited = Signal()
