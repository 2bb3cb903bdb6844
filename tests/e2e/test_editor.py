"""The workflow page's canvas editor in headless Chromium against a real server: the "Trip advice"
graph built from an empty canvas with the mouse (nodes dragged from the palette, handles
connected), a validation problem shown on its node and field and fixed, positions kept across a
save and a reload, a run from the editor lighting up every node in place, one node tried alone;
and the editor at a phone's width (add, undo, redo, delete, layout, the error handle)."""

import json
import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

GREEN = "rgb(47, 158, 68)"  # --succeeded in console.css
TAKEN = ("start", "summary", "check", "warm", "advice", "end")

# Records every state each canvas node takes, from its first drawing on.
CANVAS_STATES = """
window.__canvasStates = {};
const record = (el) => {
  const id = el.getAttribute("data-node-id");
  const states = (window.__canvasStates[id] ||= []);
  const value = el.getAttribute("data-state");
  if (states[states.length - 1] !== value) states.push(value);
};
new MutationObserver((mutations) => {
  for (const m of mutations) {
    if (m.type === "attributes") {
      if (m.target.matches(".weft-node[data-node-id]")) record(m.target);
      continue;
    }
    for (const added of m.addedNodes) {
      if (added.nodeType !== 1) continue;
      if (added.matches(".weft-node[data-node-id]")) record(added);
      added.querySelectorAll(".weft-node[data-node-id]").forEach(record);
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]});
"""


def canvas_node(page, node_id: str):
    return page.locator(f'.weft-canvas .weft-node[data-node-id="{node_id}"]')


def panel(page):
    return page.locator(".weft-panel")


def field(page, path: str, control: str = "input"):
    """The control of the field at ``path`` (as the validate endpoint names it) in the node's panel."""
    at = f'[data-field="{path}"]'
    return panel(page).locator(f"{at} > {control}, {at} > .weft-text > {control}").first


def code(page, path: str):
    """The code editor (CodeMirror) of the field at ``path`` in the node's panel."""
    return panel(page).locator(f'[data-field="{path}"] .cm-content')


def config_of(page, node_id: str) -> dict:
    return next(n for n in editor_graph(page)["nodes"] if n["id"] == node_id)["config"]


def drop(page, node_type: str, x: float, y: float) -> None:
    """Drags ``node_type`` from the palette onto the canvas at (x, y) from its top left corner."""
    before = page.locator(".weft-canvas .weft-node").count()
    page.locator(f'.weft-palette-item[data-node-type="{node_type}"]').drag_to(
        page.locator(".weft-canvas .react-flow__pane"), target_position={"x": x, "y": y}
    )
    expect(page.locator(".weft-canvas .weft-node")).to_have_count(before + 1)


def rename(page, node_id: str, name: str) -> None:
    """The selected node gets ``node_id`` and ``name`` in its panel."""
    page.fill("#weft-node-id", node_id)
    page.press("#weft-node-id", "Enter")
    page.locator(f'.weft-panel[data-panel-node="{node_id}"]').wait_for()
    page.fill("#weft-node-name", name)


def close_panel(page) -> None:
    page.get_by_role("button", name="Close the panel").click()
    panel(page).wait_for(state="detached")


def select(page, node_id: str) -> None:
    canvas_node(page, node_id).locator(".weft-node-name").click()
    page.locator(f'.weft-panel[data-panel-node="{node_id}"]').wait_for()


def centre(box) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def connect(page, source: str, target: str, handle: str = "") -> None:
    """Drags with the mouse from ``source``'s output handle to ``target``'s input."""
    edges = page.locator(".weft-canvas .react-flow__edge")
    before = edges.count()
    canvas_node(page, source).scroll_into_view_if_needed()
    out = canvas_node(page, source).locator(f'.react-flow__handle.source[data-handle="{handle}"]')
    into = canvas_node(page, target).locator(".react-flow__handle.target")
    page.mouse.move(*centre(out.bounding_box()))
    page.mouse.down()
    page.mouse.move(*centre(into.bounding_box()), steps=8)
    page.mouse.up()
    try:
        expect(edges).to_have_count(before + 1)
    except AssertionError:
        page.screenshot(path="/tmp/h2_fail.png")
        raise


def editor_graph(page) -> dict:
    return page.evaluate("window.weftEditor.getGraph()")


def new_workflow(page, name: str) -> str:
    page.fill('#create-workflow input[name="name"]', name)
    page.click('#create-workflow button[type="submit"]')
    page.wait_for_url(re.compile(r"/workflows/[0-9a-f-]{36}/$"))
    page.wait_for_selector('body[data-editor="ready"]')
    return page.url.rstrip("/").rsplit("/", 1)[1]


@pytest.fixture
def editor_page(open_page):
    """``open_page``, except that the 400s of validation are no error: the editor validates the
    draft as it is edited, and the browser logs each answer about a draft with problems."""
    opened = []

    def _open(**kwargs):
        watched = open_page(**kwargs)
        watched.page.context.add_init_script(CANVAS_STATES)
        opened.append(watched)
        return watched

    yield _open
    for watched in opened:
        watched.errors[:] = [e for e in watched.errors if not re.search(r"status of 400", e)]


def test_build_the_trip_advice_graph_with_the_mouse_fix_it_save_run_and_try_a_node(editor_page, screenshot):
    page = editor_page(width=1400, height=1000).page
    new_workflow(page, "Trip advice, by hand")

    # An empty canvas: the new workflow's start and end are deleted (selected with the mouse).
    for node_id in ("start", "end"):
        select(page, node_id)
        page.get_by_role("button", name="Delete node").click()
        canvas_node(page, node_id).wait_for(state="detached")
    assert page.locator(".weft-canvas .weft-node").count() == 0
    assert editor_graph(page) == {"nodes": [], "edges": []}

    # Seven nodes dragged from the palette, each named in its panel.
    layout = [
        ("start", "start", "Start", 330, 40),
        ("template", "summary", "Summary", 120, 150),
        ("condition", "check", "Warm enough?", 540, 150),
        ("template", "warm", "Warm advice", 420, 270),
        ("template", "cold", "Cold advice", 680, 270),
        ("aggregator", "advice", "Advice", 540, 390),
        ("end", "end", "End", 330, 500),
    ]
    for node_type, node_id, name, x, y in layout:
        drop(page, node_type, x, y)
        rename(page, node_id, name)
        close_panel(page)

    # The start's inputs, and the condition's case (whose id names its handle).
    select(page, "start")
    for _ in range(2):
        panel(page).locator('[data-add="config.inputs"]').click()
    field(page, "config.inputs[0].name").fill("city")
    panel(page).locator('[data-field="config.inputs[0].required"] input').check()
    field(page, "config.inputs[1].name").fill("temperature")
    field(page, "config.inputs[1].type", "select").select_option("number")
    panel(page).locator('[data-field="config.inputs[1].required"] input').check()
    close_panel(page)
    select(page, "check")
    field(page, "config.cases[0].id").fill("warm")
    close_panel(page)
    handles = canvas_node(page, "check").locator(".react-flow__handle.source")
    assert handles.evaluate_all("hs => hs.map(h => h.dataset.handle)") == ["warm", "else"]

    # The edges, handle to handle.
    for source, target, handle in [
        ("start", "summary", ""),
        ("start", "check", ""),
        ("check", "warm", "warm"),
        ("check", "cold", "else"),
        ("warm", "advice", ""),
        ("cold", "advice", ""),
        ("summary", "end", ""),
        ("advice", "end", ""),
    ]:
        connect(page, source, target, handle)

    # Configs typed in; the condition's variable and the warm advice through the {{ }} completion
    # of the variables upstream.
    select(page, "check")
    variable = field(page, "config.cases[0].conditions[0].variable")
    variable.press_sequentially("{{ start.t")
    assert panel(page).locator(".weft-complete [data-variable]").all_inner_texts() == ["start.temperature"]
    variable.press("Enter")
    assert variable.input_value() == "{{ start.temperature }}"
    field(page, "config.cases[0].conditions[0].operator", "select").select_option("ge")
    field(page, "config.cases[0].conditions[0].value").fill("20")
    select(page, "summary")
    code(page, "config.template").fill("{{ start.city }}: {{ start.temperature }} degrees.")
    select(page, "warm")
    template = code(page, "config.template")
    template.click()
    template.press_sequentially("Pack light for {{ start.c")
    options = page.locator(".cm-tooltip-autocomplete li")
    expect(options).to_have_count(1)
    assert options.all_inner_texts() == ["start.city"]
    template.press("Enter")
    template.press_sequentially(".")
    assert template.inner_text() == "Pack light for {{ start.city }}."
    assert config_of(page, "warm")["template"] == "Pack light for {{ start.city }}."
    # A mistake: the cold advice reads a node that is not upstream of it.
    select(page, "cold")
    code(page, "config.template").fill("Bring a coat to {{ warm.text }}.")
    select(page, "advice")
    for text in ("{{ warm.text }}", "{{ cold.text }}"):
        panel(page).locator('[data-add="config.variables"]').click()
        panel(page).locator('[data-field^="config.variables["] input').last.fill(text)
    field(page, "config.mode", "select").select_option("first")
    select(page, "end")
    for i, (key, value) in enumerate([("summary", "{{ summary.text }}"), ("advice", "{{ advice.output }}")]):
        panel(page).locator('[data-add="config.outputs"]').click()
        panel(page).locator(f'[data-kv-key="{i}"]').fill(key)
        panel(page).locator(f'[data-kv-value="{i}"]').fill(value)
    close_panel(page)

    # Validation as we edit: the problem is on the cold node, and on its field in its panel.
    cold = canvas_node(page, "cold")
    page.wait_for_selector('.weft-canvas .weft-node.invalid[data-node-id="cold"]')
    assert "warm" in cold.get_attribute("data-issues")
    assert page.locator(".weft-canvas .weft-node.invalid").count() == 1
    select(page, "cold")
    assert "warm" in panel(page).locator('[data-field="config.template"] .weft-field-issues').inner_text()
    screenshot(page, "editor-validation-problem")
    code(page, "config.template").fill("Bring a coat to {{ start.city }}.")
    page.wait_for_selector('#editor-status[data-result="valid"]')
    assert page.locator(".weft-canvas .weft-node.invalid").count() == 0
    assert panel(page).locator(".weft-field-issues").count() == 0
    close_panel(page)

    # Saved, then reloaded: the same graph, each node where it was put.
    page.click("#save-graph")
    page.wait_for_selector('#editor-status[data-result="saved"]')
    built = editor_graph(page)
    positions = {n["id"]: n["position"] for n in built["nodes"]}
    assert len({(p["x"], p["y"]) for p in positions.values()}) == 7
    assert {(e["source"], e["target"], e.get("source_handle")) for e in built["edges"]} >= {
        ("check", "warm", "warm"),
        ("check", "cold", "else"),
    }
    page.reload()
    page.wait_for_selector('body[data-editor="ready"]')
    canvas_node(page, "end").wait_for()
    assert {n["id"]: n["position"] for n in editor_graph(page)["nodes"]} == positions
    assert page.locator(".weft-canvas .react-flow__edge").count() == 8
    in_json = {n["id"]: n["position"] for n in json.loads(page.input_value("#graph-editor"))["nodes"]}
    assert in_json == positions

    # Run from the editor: every node on the taken path turns green in place, the other is skipped.
    page.click("#editor-run-toggle")
    page.fill("#editor-input-city", "Lisbon")
    page.fill("#editor-input-temperature", "25")
    page.get_by_test_id("editor-start-run").click()
    page.wait_for_selector('#editor-run-status[data-status="succeeded"]')
    for node_id in TAKEN:
        drawn = canvas_node(page, node_id)
        assert drawn.get_attribute("data-state") == "succeeded", node_id
        drawn.evaluate(
            "(el, green) => new Promise((done, fail) => { const t0 = Date.now(); (function check() {"
            " if (getComputedStyle(el).borderTopColor === green) return done();"
            " if (Date.now() - t0 > 3000) return fail(new Error(getComputedStyle(el).borderTopColor));"
            " requestAnimationFrame(check); })(); })",
            GREEN,
        )
    assert canvas_node(page, "cold").get_attribute("data-state") == "skipped"
    states = page.evaluate("window.__canvasStates")
    for node_id in TAKEN:
        assert states[node_id][-1] == "succeeded", (node_id, states[node_id])
        assert "pending" in states[node_id], (node_id, states[node_id])
    assert page.url.endswith("/")  # still on the workflow page
    select(page, "warm")
    assert "Pack light for Lisbon." in panel(page).locator(".weft-last-run").inner_text()
    screenshot(page, "editor-run-succeeded")

    # Try one node alone, with sample inputs typed in (taken from the last run at first).
    sample = page.locator("#weft-try-inputs")
    assert json.loads(sample.input_value())["start"]["city"] == "Lisbon"
    sample.fill(json.dumps({"start": {"city": "Oslo", "temperature": 30}}))
    with page.expect_response(lambda r: "/nodes/warm/try/" in r.url) as answer:
        page.click("#weft-try-run")
    assert answer.value.status == 200
    result = page.locator('.weft-try-result[data-status="succeeded"]')
    result.wait_for()
    assert "Pack light for Oslo." in result.locator(".weft-try-output").inner_text()
    screenshot(page, "editor-try-node")

    # The run made here is the run page's too, whose legend names every state.
    page.locator("#editor-run-status a").click()
    page.wait_for_selector('body[data-finished="true"]')
    legend = page.locator(".graph-panel .legend li").all_inner_texts()
    assert legend == ["pending", "running", "retrying", "succeeded", "failed", "skipped", "cancelled"]


def test_the_editor_at_a_phones_width(editor_page, screenshot):
    page = editor_page(width=420, height=900, mobile=True).page
    page.locator("#workflow-table tbody tr").first.wait_for()
    page.get_by_role("link", name="Trip advice", exact=True).click()
    page.wait_for_selector('body[data-editor="ready"]')
    canvas_node(page, "end").wait_for()

    def fits() -> bool:
        return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

    assert fits()
    # The glitches of old: no stray "null" in the run form, a version badge that says something,
    # a legend that names every state.
    assert "null" not in page.locator("#run-form").inner_text()
    assert page.locator("#workflow-version").inner_text() == "not published"
    channels = page.evaluate(
        "async () => { const page = await import('/static/console/pages/workflow.js');"
        " return [0, 1, 3, 7].map(page.channelsOf); }"
    )
    assert channels == ["not released", "web", "web + api", "web + api + marketplace"]
    assert "cancelled" in page.locator("#editor-panel .legend").inner_text()
    # The JSON view is one click away, either way.
    page.click("#toggle-json")
    assert page.locator("#graph-editor").is_hidden()
    page.click("#toggle-json")
    assert page.locator("#graph-editor").is_visible()
    box = page.locator(".weft-canvas").bounding_box()
    assert 0 < box["width"] <= 420
    # The demo's graph had no positions: it was laid out, top to bottom.
    placed = {n["id"]: n["position"] for n in editor_graph(page)["nodes"]}
    rows = [placed[node_id]["y"] for node_id in ("start", "check", "warm", "advice", "end")]
    assert rows == sorted(rows)
    assert len(set(rows)) == len(rows)

    # A node from the palette (a tap adds it), undone, redone, deleted.
    page.locator('.weft-palette-item[data-node-type="http_request"]').click()
    canvas_node(page, "http_request").wait_for()
    assert panel(page).is_visible()
    assert fits()
    # The error policy: on_failure "branch" gives the node an error handle.
    panel(page).locator(".weft-policy summary").click()
    field(page, "error_policy.on_failure", "select").select_option("branch")
    canvas_node(page, "http_request").locator('.react-flow__handle.source[data-handle="error"]').wait_for()
    screenshot(page, "editor-phone")
    undo = page.locator('.weft-toolbar [data-action="undo"]')
    redo = page.locator('.weft-toolbar [data-action="redo"]')
    undo.click()
    assert canvas_node(page, "http_request").locator('[data-handle="error"]').count() == 0
    undo.click()
    canvas_node(page, "http_request").wait_for(state="detached")
    redo.click()
    canvas_node(page, "http_request").wait_for()
    redo.click()
    canvas_node(page, "http_request").locator('[data-handle="error"]').wait_for()
    select(page, "http_request")
    page.locator('.weft-toolbar [data-action="delete"]').click()
    canvas_node(page, "http_request").wait_for(state="detached")

    # A code node's code is edited in a Python code editor.
    page.locator('.weft-palette-item[data-node-type="code"]').click()
    assert panel(page).locator('[data-field="config.code"] [data-code-editor="python"] .cm-lineNumbers').is_visible()
    code(page, "config.code").fill("def main(**inputs):\n    return {'n': 1}")
    assert config_of(page, "code")["code"] == "def main(**inputs):\n    return {'n': 1}"
    page.get_by_role("button", name="Delete node").click()
    canvas_node(page, "code").wait_for(state="detached")

    # Moved by hand, then laid out again.
    page.locator('.weft-toolbar [data-action="fit"]').click()
    node = canvas_node(page, "summary")
    node.scroll_into_view_if_needed()
    x, y = centre(node.bounding_box())
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 90, steps=6)
    page.mouse.up()
    moved = {n["id"]: n["position"] for n in editor_graph(page)["nodes"]}
    assert moved["summary"] != placed["summary"]
    page.locator('.weft-toolbar [data-action="layout"]').click()
    assert {n["id"]: n["position"] for n in editor_graph(page)["nodes"]} == placed
    # An edge selected with the mouse and deleted with the keyboard.
    edges = page.locator(".weft-canvas .react-flow__edge")
    count = edges.count()
    page.locator('.weft-canvas [data-testid="rf__edge-summary->end@"] .react-flow__edge-interaction').click(force=True)
    page.keyboard.press("Delete")
    expect(edges).to_have_count(count - 1)
    assert not any(e["source"] == "summary" and e["target"] == "end" for e in editor_graph(page)["edges"])
    assert fits()
