"""Project Admin pages: clients, access policies, members and sessions of one project at a time.

Include with ``path("project-admin/", include("project_admin.urls"))``. Every write goes through
:mod:`medplum_auth.services` (via :mod:`medplum_auth.forms`), so these pages, the Django admin,
the CLI and the APIs validate alike.
"""
