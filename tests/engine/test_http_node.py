"""The http_request node in a run: output shape, status handling, Retry-After, the guard, limits."""

import asyncio
import time

import pytest

from tests.engine.conftest import chain, end, execute, node, start, timeline
from workflows.engine import validate_graph

NO_JITTER = {"max_attempts": 2, "backoff": "fixed", "initial_s": 0.01, "jitter": False}


def call(config: dict, **error_policy) -> dict:
    return chain(start("city"), node("call", "http_request", config, **error_policy), end(out="{{ call }}"))


async def test_a_get_with_query_and_headers_gives_status_headers_body_and_json(fake_http, allow_loopback):
    graph = call(
        {
            "url": fake_http.url("/echo?lang=en"),
            "query": {"city": "{{ start.city }}", "units": "metric"},
            "headers": {"X-City": "{{ start.city }}"},
        }
    )
    result, _ = await execute(graph, {"city": "Oslo"})
    assert result.status == "succeeded", result.error
    out = result.outputs["out"]
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"]["query"] == {"lang": "en", "city": "Oslo", "units": "metric"}
    assert out["json"]["headers"]["x-city"] == "Oslo"
    assert out["json"]["method"] == "GET"
    assert out["body"].startswith("{")


async def test_a_post_sends_rendered_json(fake_http, allow_loopback):
    graph = call({"method": "POST", "url": fake_http.url("/echo"), "json": {"city": "{{ start.city }}", "n": 2}})
    result, _ = await execute(graph, {"city": "Bergen"})
    assert result.status == "succeeded", result.error
    assert result.outputs["out"]["json"]["body"] == '{"city":"Bergen","n":2}'


async def test_a_text_answer_has_no_json(fake_http, allow_loopback):
    result, _ = await execute(call({"url": fake_http.url("/bytes?n=3")}), {"city": "x"})
    assert result.outputs["out"]["body"] == "xxx"
    assert result.outputs["out"]["json"] is None


async def test_a_404_fails_the_node_without_a_retry(fake_http, allow_loopback):
    result, journal = await execute(call({"url": fake_http.url("/status?code=404")}, retry=NO_JITTER), {"city": "x"})
    assert result.status == "failed"
    assert "answered 404" in result.error
    assert ("node.retrying", "call") not in timeline(journal)


async def test_a_404_is_an_output_without_raise_for_status(fake_http, allow_loopback):
    graph = call({"url": fake_http.url("/status?code=404"), "raise_for_status": False})
    result, _ = await execute(graph, {"city": "x"})
    assert result.status == "succeeded"
    assert result.outputs["out"]["status"] == 404
    assert result.outputs["out"]["json"] == {"error": "scripted"}


async def test_a_429_is_retried_after_its_retry_after(fake_http, allow_loopback):
    graph = call({"url": fake_http.url("/status?code=429&retry_after=0.3")}, retry=NO_JITTER)
    started = time.monotonic()
    result, journal = await execute(graph, {"city": "x"})
    assert result.status == "failed"
    retrying = [e for e in journal.events if e["type"] == "node.retrying"]
    assert len(retrying) == 1
    assert retrying[0]["data"]["delay_s"] == pytest.approx(0.3)
    assert time.monotonic() - started >= 0.3
    assert len([r for r in fake_http.requests if r["path"] == "/status"]) == 2


async def test_a_503_is_retried(fake_http, allow_loopback):
    result, journal = await execute(call({"url": fake_http.url("/status?code=503")}, retry=NO_JITTER), {"city": "x"})
    assert result.status == "failed"
    assert ("node.retrying", "call") in timeline(journal)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/json", "http://[::1]:{port}/json"]
)
async def test_the_guard_refuses_at_once_without_retrying(url, fake_http):
    graph = call({"url": url.format(port=fake_http.port)}, retry=NO_JITTER)
    result, journal = await execute(graph, {"city": "x"})
    assert result.status == "failed"
    assert "refused" in result.error
    assert ("node.retrying", "call") not in timeline(journal)
    assert fake_http.requests == []


async def test_a_url_rendered_to_another_scheme_is_refused(fake_http):
    graph = chain(start("target"), node("call", "http_request", {"url": "{{ start.target }}"}), end(out="{{ call }}"))
    result, _ = await execute(graph, {"target": "file:///etc/passwd"})
    assert result.status == "failed"
    assert "not http or https" in result.error


async def test_a_trickling_server_fails_by_the_nodes_timeout(fake_http, allow_loopback):
    # The body would be complete after 10 s: the node fails by its 0.6 s timeout first.
    result, _ = await execute(call({"url": fake_http.url("/drip?n=100&every=0.1"), "timeout_s": 0.6}), {"city": "x"})
    assert result.status == "failed"
    assert "timed out" in result.error


async def test_a_blackholed_server_fails_by_the_nodes_timeout(silent_server, allow_loopback):
    # The server never answers: only the node's timeout ends it (wait_for is a safety net).
    result, _ = await asyncio.wait_for(
        execute(call({"url": silent_server.url("/"), "timeout_s": 0.5}), {"city": "x"}), 30
    )
    assert result.status == "failed"
    assert "timed out" in result.error


async def test_a_body_past_max_bytes_fails(fake_http, allow_loopback):
    result, _ = await execute(call({"url": fake_http.url("/bytes?n=1000"), "max_bytes": 100}), {"city": "x"})
    assert result.status == "failed"
    assert "larger than 100 bytes" in result.error


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"url": "ftp://example.com/"}, "config.url", "http"),
        ({"url": "https://example.com/", "body": "a", "json": {}}, "config.json", "not both"),
        ({"url": "https://example.com/", "method": "TRACE"}, "config.method", ""),
        ({"url": "https://example.com/", "timeout_s": 0}, "config.timeout_s", ""),
    ],
)
def test_bad_configs_are_reported(config, field, message):
    graph = chain(start(), node("call", "http_request", config), end(out="{{ call.status }}"))
    issues = [issue for issue in validate_graph(graph) if issue.node == "call"]
    assert [issue.field for issue in issues] == [field]
    assert message in issues[0].message
