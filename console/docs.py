"""The console's documentation pages: the node reference (``/docs/nodes/``).

The page is rendered from the node registry by the same entries as ``docs/nodes.md``
(``workflows.node_reference``), through the template's escaping: no Markdown is parsed, and the
only markup added to the registry's text is ``<code>`` for its `code spans`.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import escape, format_html_join
from django.utils.safestring import SafeString

from workflows.node_reference import error_policy_paragraphs, node_docs

from .views import console_login_required


def inline_code(text: str) -> SafeString:
    """``text`` escaped, its `code spans` as ``<code>`` elements."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: plain text
        return escape(text)
    return format_html_join("", "{}<code>{}</code>", zip(parts[0::2], parts[1::2], strict=False)) + escape(parts[-1])


@console_login_required()
def node_reference(request: HttpRequest) -> HttpResponse:
    nodes = [
        {
            "type": doc.type,
            "description": inline_code(doc.description),
            "paragraphs": [inline_code(paragraph) for paragraph in doc.paragraphs],
            "failure": [inline_code(paragraph) for paragraph in doc.failure],
            "fields": [
                {"name": item.name, "kind": inline_code(item.kind), "required": item.required} for item in doc.fields
            ],
            "example": doc.example,
            "outputs": inline_code(doc.outputs),
            "effects": doc.effects,
            "effects_text": doc.effects_text,
        }
        for doc in node_docs()
    ]
    context = {
        "page": "node_docs",
        "title": "Node reference",
        "nodes": nodes,
        "error_policy": [inline_code(paragraph) for paragraph in error_policy_paragraphs()],
    }
    return render(request, "console/node_docs.html", context)
