from django.contrib.auth import views as auth_views
from django.urls import path

from . import docs, views

app_name = "console"

urlpatterns = [
    path("", views.workflow_list, name="workflows"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="console/login.html", redirect_authenticated_user=True, next_page="console:workflows"
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="console:login"), name="logout"),
    path("workflows/<uuid:workflow_id>/", views.workflow_detail, name="workflow"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("templates/", views.template_list, name="templates"),
    path("providers/", views.provider_list, name="providers"),
    path("apps/", views.app_list, name="apps"),
    path("dsl/v1.schema.json", views.dsl_schema, name="dsl-schema"),
    path("docs/nodes/", docs.node_reference, name="node-docs"),
]
