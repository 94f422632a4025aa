from django.apps import AppConfig


class ProjectAdminConfig(AppConfig):
    name = "project_admin"
    verbose_name = "Project Admin"
