"""Optional integrations with other frameworks; importing one requires that framework."""
