"""The console in headless Chromium against a real server: sign in, run the demo workflow with a
condition and parallel branches and watch its nodes turn green, edit and validate a graph, cancel
a slow run after its socket dropped, and use it at a phone's width."""

import copy
import json
import re

import pytest

from tests.engine.test_dsl_schema import DESIGN_EXAMPLE, MISSHAPEN
from workflows.engine import dsl_shape_issues

pytestmark = pytest.mark.slow

GREEN = "rgb(47, 158, 68)"  # --succeeded in console.css
TRIP_TAKEN = ("start", "summary", "check", "warm", "advice", "end")


def node(page, node_id: str, scope: str = "#graph"):
    return page.locator(f'{scope} svg g.node[data-node-id="{node_id}"]')


def start_trip_run(page) -> str:
    page.goto("/")
    page.get_by_role("link", name="Trip advice", exact=True).click()
    page.wait_for_selector('#graph svg g.node[data-node-id="check"]')
    page.fill("#input-city", "Lisbon")
    page.fill("#input-temperature", "25")
    page.get_by_test_id("start-run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


def test_a_run_of_the_demo_workflow_turns_its_nodes_green_as_events_arrive(open_page, screenshot):
    watched = open_page()
    page = watched.page
    rows = page.locator("#workflow-table tbody tr")
    rows.first.wait_for()
    names = sorted(rows.locator("td:first-child a").all_inner_texts())
    assert names == ["Greeting", "Trip advice", "Trip advice (LLM)"]

    run_id = start_trip_run(page)
    page.wait_for_selector('#run-status[data-status="succeeded"]')
    page.wait_for_selector('body[data-finished="true"]')

    # Every node on the taken paths is green, the branch not taken is skipped.
    for node_id in TRIP_TAKEN:
        drawn = node(page, node_id)
        assert drawn.get_attribute("data-state") == "succeeded", node_id
        assert "state-succeeded" in drawn.get_attribute("class"), node_id
        # The colour eases in (a 0.2 s CSS transition): wait for it to settle.
        box = drawn.locator("rect.node-box")
        box.evaluate(
            "(el, green) => new Promise((done, fail) => { const t0 = Date.now(); (function check() {"
            " if (getComputedStyle(el).stroke === green) return done();"
            " if (Date.now() - t0 > 3000) return fail(new Error(getComputedStyle(el).stroke));"
            " requestAnimationFrame(check); })(); })",
            GREEN,
        )
        assert box.evaluate("el => getComputedStyle(el).stroke") == GREEN, node_id
    assert node(page, "cold").get_attribute("data-state") == "skipped"

    # ... and each got there through the events: drawn pending, then running, then succeeded.
    states = page.evaluate("window.__nodeStates")
    for node_id in TRIP_TAKEN:
        assert states[node_id] == ["pending", "running", "succeeded"], (node_id, states[node_id])
    assert states["cold"] == ["pending", "skipped"]

    # The timeline lists the events with durations; the outputs and the socket are right.
    timeline = page.locator("#timeline li")
    assert page.locator('#timeline li[data-type="node.succeeded"]').count() == len(TRIP_TAKEN)
    assert timeline.first.get_attribute("data-type") == "run.started"
    assert timeline.last.get_attribute("data-type") == "run.succeeded"
    assert re.search(r"\d+(\.\d+)? (ms|s)", page.locator('#timeline li[data-type="run.succeeded"]').inner_text())
    seqs = [int(s) for s in timeline.evaluate_all("items => items.map(li => li.dataset.seq)")]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert "Pack light for Lisbon." in page.locator("#run-outputs").inner_text()
    run_sockets = [url for url in watched.sockets if "/ws/runs/" in url]
    # Opened with a fresh single-use ticket, never a token.
    assert len(run_sockets) == 1
    base, _, ticket = run_sockets[0].partition("&ticket=")
    assert base == f"{page.url.split('/runs/')[0].replace('http', 'ws')}/ws/runs/{run_id}/?after=0"
    assert len(ticket) > 20
    assert page.locator("#cancel-run").is_hidden()

    # The node's output is shown with it.
    node(page, "warm").click()
    card = page.locator('#node-details [data-node-id="warm"]')
    assert "Pack light for Lisbon." in card.locator(".node-output").inner_text()
    screenshot(page, "console-run-succeeded")

    # The workflow page lists the run.
    page.get_by_role("link", name="Trip advice", exact=True).click()
    page.wait_for_selector(f'#run-table tr[data-run-id="{run_id}"] [data-status="succeeded"]')


SLOW_GRAPH = """{
  "nodes": [
    {"id": "start", "type": "start", "name": "Start", "config": {"inputs": []}},
    {"id": "fetch", "type": "http_request", "name": "Slow call",
     "config": {"url": "%s", "timeout_s": 25}},
    {"id": "end", "type": "end", "name": "End", "config": {"outputs": {"status": "{{ fetch.status }}"}}}
  ],
  "edges": [{"source": "start", "target": "fetch"}, {"source": "fetch", "target": "end"}]
}"""

BROKEN_GRAPH = """{
  "nodes": [
    {"id": "start", "type": "start", "config": {"inputs": []}},
    {"id": "bad", "type": "template", "config": {"template": "{{ nowhere.text }}"}},
    {"id": "end", "type": "end", "config": {"outputs": {}}}
  ],
  "edges": [{"source": "start", "target": "bad"}, {"source": "bad", "target": "end"}]
}"""


def test_a_slow_run_survives_a_dropped_socket_and_ends_cancelled(open_page, screenshot, live_console, slow_server):
    watched = open_page()
    page = watched.page
    # A new workflow, given its graph in the JSON editor.
    page.fill('#create-workflow input[name="name"]', "Slow one")
    page.click('#create-workflow button[type="submit"]')
    page.wait_for_url(re.compile(r"/workflows/[0-9a-f-]{36}/$"))
    page.wait_for_selector("#editor-graph svg")

    # A graph with a problem: validation shows it at the node it concerns.
    page.fill("#graph-editor", BROKEN_GRAPH)
    with page.expect_response(lambda r: r.url.endswith("/validate/")) as answer:
        page.click("#validate-graph")
    assert answer.value.status == 400
    page.wait_for_selector('#editor-status[data-result="invalid"]')
    bad = node(page, "bad", "#editor-graph")
    assert "invalid" in bad.get_attribute("class")
    assert "nowhere" in bad.get_attribute("data-issues")
    assert page.locator('#graph-issues li[data-node="bad"]').count() >= 1
    assert "invalid" not in node(page, "start", "#editor-graph").get_attribute("class")
    # The browser reports the 400 it got as a console error; that one is expected.
    watched.errors[:] = [e for e in watched.errors if not re.search(r"status of 400", e)]

    page.fill("#graph-editor", SLOW_GRAPH % live_console.slow_url)
    page.click("#validate-graph")
    page.wait_for_selector('#editor-status[data-result="valid"]')
    assert page.locator("#graph-issues li").count() == 0
    page.click("#save-graph")
    page.wait_for_selector('#editor-status[data-result="saved"]')
    page.wait_for_selector('#graph svg g.node[data-node-id="fetch"][data-type="http_request"]')

    page.get_by_test_id("start-run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    page.wait_for_selector('#graph g.node[data-node-id="fetch"][data-state="running"]')
    assert node(page, "start").get_attribute("data-state") == "succeeded"
    assert page.locator("#run-status").get_attribute("data-status") == "running"

    # The socket drops; the page reconnects from the last event it saw.
    last_seq = page.evaluate("window.weftRun.state.lastSeq")
    assert last_seq > 0
    page.evaluate("window.weftRun.dropSocket()")
    page.wait_for_selector('body[data-connects="2"] #socket-state[data-state="open"]')
    run_sockets = [url for url in watched.sockets if "/ws/runs/" in url]
    assert len(run_sockets) == 2
    assert f"?after={last_seq}&ticket=" in run_sockets[-1]
    assert len({url.partition("&ticket=")[2] for url in run_sockets}) == 2  # each connection has its own ticket

    page.click("#cancel-run")
    page.wait_for_selector('#run-status[data-status="cancelled"]')
    page.wait_for_selector('#timeline li[data-type="run.cancelled"]')
    page.wait_for_selector('body[data-finished="true"]')
    assert node(page, "fetch").get_attribute("data-state") in ("cancelled", "failed")
    assert node(page, "end").get_attribute("data-state") in ("pending", "skipped", "cancelled")
    assert page.locator("#cancel-run").is_hidden()
    # Each event is in the timeline once, though the socket was opened twice.
    seqs = page.locator("#timeline li").evaluate_all("items => items.map(li => Number(li.dataset.seq))")
    assert seqs == list(range(1, len(seqs) + 1))
    assert slow_server.requests >= 1
    path = screenshot(page, "console-run-cancelled")
    assert path.stat().st_size > 10_000


def test_the_console_fits_a_phone(open_page, screenshot):
    watched = open_page(width=390, height=844, mobile=True)
    page = watched.page
    page.locator("#workflow-table tbody tr").first.wait_for()

    def fits() -> bool:
        return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

    assert fits()
    run_id = start_trip_run(page)
    page.wait_for_selector('body[data-finished="true"]')
    assert fits()
    graph = page.locator("#graph svg").bounding_box()
    assert 0 < graph["width"] <= 390
    assert node(page, "end").is_visible()
    screenshot(page, f"console-phone-run-{run_id[:8]}")
    page.goto("/templates/")
    page.wait_for_selector("#template-empty, #template-list article", state="attached")
    assert fits()


# In the page: the console's check of a graph's shape, against the schema the console serves.
SHAPE_IN_THE_BROWSER = """async (graph) => {
  const dsl = await import("/static/console/dsl.js");
  return dsl.dslShapeIssues(await dsl.loadDslSchema(document.body.dataset.dslSchema), graph);
}"""


def test_the_editor_checks_the_graphs_shape_as_the_server_does_before_sending_it(open_page):
    page = open_page().page
    page.fill('#create-workflow input[name="name"]', "Shape check")
    page.click('#create-workflow button[type="submit"]')
    page.wait_for_url(re.compile(r"/workflows/[0-9a-f-]{36}/$"))
    page.wait_for_selector("#editor-graph svg")
    workflow_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # The browser names each problem as the API does.
    for change, _ in MISSHAPEN:
        graph = change(copy.deepcopy(DESIGN_EXAMPLE))
        in_browser = page.evaluate(SHAPE_IN_THE_BROWSER, graph)
        assert in_browser == [issue.as_dict() for issue in dsl_shape_issues(graph)], graph
    policy = copy.deepcopy(DESIGN_EXAMPLE)
    policy["nodes"][1]["error_policy"] = {"on_failure": "explode", "retry": {"max_attempts": 0}}
    assert {(issue["node"], issue["field"]) for issue in page.evaluate(SHAPE_IN_THE_BROWSER, policy)} == {
        ("greet", "error_policy.on_failure"),
        ("greet", "error_policy.retry.max_attempts"),
    }

    # A graph of the wrong shape is not sent: its problems show at once.
    sent = []
    page.on("request", lambda request: sent.append(request.url) if request.method != "GET" else None)
    misshapen = copy.deepcopy(DESIGN_EXAMPLE)
    misshapen["nodes"][1]["colour"] = "red"
    page.fill("#graph-editor", json.dumps(misshapen))
    page.click("#save-graph")
    page.wait_for_selector('#editor-status[data-result="invalid"]')
    assert page.locator('#graph-issues li[data-node="greet"]').inner_text() == "greet · nodes[1].colour: Unknown field."
    page.click("#validate-graph")
    assert page.locator("#graph-issues li").count() == 1
    assert sent == []

    # Of the right shape, it is: the server checks it and saves it.
    page.fill("#graph-editor", json.dumps(DESIGN_EXAMPLE))
    page.click("#save-graph")
    page.wait_for_selector('#editor-status[data-result="saved"]')
    assert [url.split("/api/v1/")[1] for url in sent] == [f"workflows/{workflow_id}/"]
