"""The official templates, one JSON file each, loaded into ``workflow_templates`` by migrations.

Each file holds ``id`` (fixed, so that loading again updates the same row), ``name``,
``description``, ``category`` and ``template_data`` (a DSL v1 graph). Official templates have
no owner and are public.

Their llm nodes name the provider as ``{{ start.provider }}``: every official template declares
a required ``provider`` start input, the id of one of the running user's LLM providers
(``GET /api/v1/providers/``). A template therefore needs no editing after it is instantiated:
the provider is chosen per run, and the llm node only accepts a provider of the workflow's owner.

To change or add an official template, edit or add its file here and add a data migration that
calls :func:`official_templates_load` again (migrations already applied do not run twice).
"""

import json
from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
FIELDS = ("name", "description", "category", "template_data")


def official_templates() -> list[dict]:
    """Every official template's document, in file-name order."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(DIRECTORY.glob("*.json"))]


def official_templates_load(*, template_model) -> int:
    """Create or update each official template by its fixed id; ``template_model`` may be a migration's."""
    documents = official_templates()
    for document in documents:
        template_model.objects.update_or_create(
            id=document["id"],
            defaults={
                **{name: document[name] for name in FIELDS},
                "is_official": True,
                "is_public": True,
                "owner": None,
            },
        )
    return len(documents)


def official_templates_unload(*, template_model) -> int:
    deleted, _ = template_model.objects.filter(
        id__in=[document["id"] for document in official_templates()], is_official=True
    ).delete()
    return deleted
