import pytest
from django.db import connection

SEED_TABLES = {
    "ai_app",
    "app_source",
    "license",
    "workflows",
    "nodes",
    "edges",
    "flow",
    "runs",
    "tasks",
    "scheduled_workflows",
    "workflow_snapshots",
    "tools",
    "llm_providers",
    "agents",
    "sessions",
    "messages",
    "session_workflows",
    "workflow_templates",
    "workflow_node_history",
    "audit_logs",
    "usage_metrics",
}


@pytest.mark.django_db
def test_every_seed_table_exists_in_the_migrated_database():
    assert set(connection.introspection.table_names()) >= SEED_TABLES
