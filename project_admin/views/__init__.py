"""Views of the Project Admin pages, one module per section."""
