"""Signals sent by :mod:`medplum_auth`, for apps that keep data beside the identity model.

``member_invited(sender=ProjectMembership, membership, user, created_user, first_name, last_name)``
is sent inside the invite transaction; a receiver that raises rolls the invite back. The FHIR
API listens to it to create the profile resource (Patient, Practitioner, RelatedPerson).

``demo_seeded(sender=Command, project, patient, practitioner)`` is sent by ``medplum_seed_demo``
inside its transaction, with the demo memberships. A receiver adds demo data it keeps (the FHIR
API: a few Observations and Conditions of the demo patient), idempotently, and returns a dict
that the command prints under ``demo_data``.
"""

from django.dispatch import Signal

member_invited = Signal()
demo_seeded = Signal()
