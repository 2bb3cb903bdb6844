from django.apps import AppConfig


class WorkflowTemplatesConfig(AppConfig):
    # The label is not "templates", which reads like Django's template directories.
    name = "templates"
    label = "workflow_templates"
    verbose_name = "Workflow templates"
