"""The node reference: docs/nodes.md generated from the registry, checked to be current, shown in the console."""

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from workflows.node_reference import REFERENCE_PATH, documented_types, reference_markdown

COMMITTED = Path(settings.BASE_DIR) / REFERENCE_PATH


def test_the_committed_reference_is_current():
    call_command("node_reference", "--check")

    assert COMMITTED.read_text(encoding="utf-8") == reference_markdown()


def test_check_fails_on_a_stale_file_naming_the_difference(tmp_path):
    stale = tmp_path / "nodes.md"
    stale.write_text(reference_markdown().replace("## http_request", "## http_call"), encoding="utf-8")

    with pytest.raises(CommandError) as failure:
        call_command("node_reference", "--check", "--path", str(stale))

    message = str(failure.value)
    assert "out of date" in message
    assert "-## http_call" in message
    assert "+## http_request" in message


def test_check_fails_when_the_file_is_missing(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("node_reference", "--check", "--path", str(tmp_path / "nodes.md"))


def test_the_command_writes_the_reference(tmp_path):
    target = tmp_path / "docs" / "nodes.md"

    call_command("node_reference", "--path", str(target))

    assert target.read_text(encoding="utf-8") == reference_markdown()
    call_command("node_reference", "--check", "--path", str(target))


def test_every_product_type_has_its_section_with_config_outputs_and_failure():
    text = reference_markdown()

    assert {"start", "end", "template", "code", "http_request", "llm", "agent", "tool"} <= set(documented_types())
    for name in documented_types():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "### Config" in section, name
        assert "```json" in section, name  # its example
        assert "### Outputs" in section, name
        assert "### Retry and failure" in section, name
        assert ("Effects: yes." in section) or ("Effects: no." in section), name
    assert "`on_failure`" in text
    assert "test_" not in text  # types that tests register are not the product's


@pytest.mark.django_db
def test_the_console_page_renders_the_reference(client, user):
    client.force_login(user)

    response = client.get("/docs/nodes/")

    assert response.status_code == 200
    page = response.content.decode()
    for name in documented_types():
        assert f'id="{name}"' in page
    assert "<code>raise_for_status</code>" in page  # code spans as code
    assert "{{ start.city }}" in page  # templates shown as written, not rendered
    assert "<script>" not in page.split("<main", 1)[1].split("</main>", 1)[0]


@pytest.mark.django_db
def test_the_console_page_needs_a_sign_in(client):
    response = client.get("/docs/nodes/")

    assert response.status_code == 302
    assert "/login/" in response["Location"]
