"""Project Admin pages (clients, access policies, members). Pages arrive with the Project Admin issue."""
