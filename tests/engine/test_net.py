"""The outbound guard: what it refuses, what an operator can allow, and that it connects to what it checked."""

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.fakes.http_server import FakeHTTP, Listener
from workflows.engine.errors import NonRetryableError, RetryableError
from workflows.engine.net import (
    OutboundBlocked,
    OutboundTimeout,
    ResponseTooLarge,
    guarded_async_client,
    guarded_client,
    outbound_errors,
    parse_retry_after,
    read_limited,
)

# {port} is a loopback port that records connections: a refused URL must never reach it.
REFUSED_URLS = [
    "http://127.0.0.1:{port}/",
    "http://127.9.9.9:{port}/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.1.1/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]:{port}/",
    "http://[::]:{port}/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]:{port}/",
    "http://[2002:7f00:1::]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://2130706433:{port}/",
    "http://017700000001:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://127.1:{port}/",
    "http://localhost:{port}/",
    "https://localhost:{port}/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/",
    "dict://127.0.0.1:{port}/",
    "javascript:alert(1)",
    "http:///no-host",
]


async def guarded_get(url: str, *, timeout_s: float):
    async with guarded_async_client(timeout_s=timeout_s) as client:
        with outbound_errors():
            return await client.get(url)


@pytest.mark.parametrize("template", REFUSED_URLS)
async def test_the_guard_refuses_non_public_addresses_spellings_and_schemes(template, listener, settings):
    url = template.format(port=listener.port)
    with pytest.raises(OutboundBlocked) as refused:
        await guarded_get(url, timeout_s=2)
    assert isinstance(refused.value, NonRetryableError)
    assert refused.value.reason
    await asyncio.sleep(0.15)
    assert listener.connections == 0


async def test_a_name_resolving_to_loopback_is_refused_without_saying_what_it_resolves_to(listener, caplog):
    with pytest.raises(OutboundBlocked) as refused:
        await guarded_get(f"http://localhost:{listener.port}/", timeout_s=2)
    assert str(refused.value) == (
        "Outbound request refused: the address of localhost is not allowed; "
        "an operator can allow it in WEFT['OUTBOUND_ALLOW']."
    )
    assert "127.0.0.1" not in str(refused.value)
    assert "::1" not in str(refused.value)
    assert "loopback" not in str(refused.value)
    # The detail is for the operator, in the log.
    assert any("loopback" in r.getMessage() and "localhost" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.15)
    assert listener.connections == 0


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sync_get(url: str) -> None:
    with guarded_client(timeout_s=2) as client, outbound_errors():
        client.get(url)


@pytest.mark.parametrize("client", ["async", "sync"])
async def test_a_refused_port_is_a_generic_could_not_connect(allow_loopback, caplog, client):
    url = f"http://127.0.0.1:{closed_port()}/x"
    call = guarded_get(f"{url}?q=1", timeout_s=2) if client == "async" else asyncio.to_thread(sync_get, f"{url}?q=1")
    with pytest.raises(RetryableError) as failed:
        await call
    assert str(failed.value) == f"Could not connect to {url}."
    assert "ConnectError" in caplog.text  # the detail went to the log


async def test_an_allow_listed_loopback_server_is_reached(fake_http, allow_loopback):
    async with guarded_async_client(timeout_s=5) as client:
        response = await client.get(fake_http.url("/json"))
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}


async def test_the_allow_list_can_name_a_host_and_port(fake_http, settings):
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": [f"localhost:{fake_http.port}"]}
    async with guarded_async_client(timeout_s=5) as client:
        # Some resolvers list ::1 first; the fake listens on IPv4, so the guard tries the next address.
        response = await client.get(f"http://localhost:{fake_http.port}/json")
        assert response.status_code == 200
        with pytest.raises(OutboundBlocked):
            await client.get(f"http://localhost:{fake_http.port + 1 if fake_http.port < 65535 else 1}/json")
        with pytest.raises(OutboundBlocked):
            await client.get(f"http://127.0.0.1:{fake_http.port}/json")


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "file:///etc/passwd",
        "ftp://127.0.0.1:{port}/",
    ],
)
async def test_a_redirect_to_a_refused_address_is_refused(target, fake_http, listener, settings):
    # Only the fake server's port is allowed: the listener (same address, other port) is not.
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": [f"127.0.0.1/32:{fake_http.port}"]}
    location = target.format(port=listener.port)
    async with guarded_async_client(timeout_s=5) as client:
        with pytest.raises(OutboundBlocked), outbound_errors():
            await client.get(fake_http.url("/redirect"), params={"to": location})
    await asyncio.sleep(0.15)
    assert listener.connections == 0
    assert [r["path"] for r in fake_http.requests] == ["/redirect"]


async def test_an_allowed_redirect_is_followed_and_redirects_are_capped(fake_http, allow_loopback, settings):
    async with guarded_async_client(timeout_s=5) as client:
        response = await client.get(fake_http.url("/redirect"), params={"to": fake_http.url("/json")})
        assert response.json() == {"hello": "world"}

    settings.WEFT = {**settings.WEFT, "OUTBOUND_MAX_REDIRECTS": 3}
    loop_url = fake_http.url("/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/json")
    async with guarded_async_client(timeout_s=5) as client:
        with pytest.raises(OutboundBlocked, match="too many redirects"), outbound_errors():
            await client.get(loop_url)


async def test_a_blackholed_server_fails_by_timeout(silent_server, allow_loopback):
    # The server never answers: only the call's own timeout ends it (wait_for is a safety net).
    with pytest.raises(OutboundTimeout) as timed_out:
        await asyncio.wait_for(guarded_get(silent_server.url("/"), timeout_s=0.5), 30)
    assert isinstance(timed_out.value, RetryableError)


async def test_a_response_past_the_size_cap_is_refused_while_streaming(fake_http, allow_loopback):
    async with guarded_async_client(timeout_s=5) as client:
        async with client.stream("GET", fake_http.url("/bytes"), params={"n": "5000"}) as response:
            assert len(await read_limited(response, max_bytes=5000)) == 5000
        async with client.stream("GET", fake_http.url("/bytes"), params={"n": "5001"}) as response:
            with pytest.raises(ResponseTooLarge):
                await read_limited(response, max_bytes=5000)


async def test_the_guard_connects_to_the_address_it_checked(monkeypatch, settings):
    """A name that resolves to an allowed address at check time and to another later (DNS rebinding)
    is connected to at the checked address: the second answer never gets a connection."""
    allowed_server = FakeHTTP(host="127.0.0.2").start()
    port = allowed_server.port
    rebound = Listener(host="127.0.0.1", port=port).start()
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": ["127.0.0.2/32"]}

    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.2"])

    def rebinding_getaddrinfo(host, *args, **kwargs):
        if host == "rebind.example":
            host = next(answers, "127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    try:
        async with guarded_async_client(timeout_s=5) as client:
            response = await client.get(f"http://rebind.example:{port}/echo")
        assert response.status_code == 200
        assert response.json()["headers"]["host"] == f"rebind.example:{port}"
        await asyncio.sleep(0.15)
        assert rebound.connections == 0
    finally:
        rebound.stop()
        allowed_server.stop()


def test_the_sync_client_is_guarded_the_same_way(fake_http, listener, settings):
    with guarded_client(timeout_s=2) as client, pytest.raises(OutboundBlocked):
        client.get(f"http://localhost:{listener.port}/")
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": [f"127.0.0.1:{fake_http.port}"]}
    with guarded_client(timeout_s=5) as client:
        assert client.get(fake_http.url("/json")).json() == {"hello": "world"}
        with pytest.raises(OutboundBlocked):
            client.get(fake_http.url("/redirect"), params={"to": f"http://127.0.0.1:{listener.port}/"})
    assert listener.connections == 0


def test_proxy_variables_do_not_bypass_the_guard(monkeypatch, fake_http, listener, settings):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fake_http.port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{fake_http.port}")
    settings.WEFT = {**settings.WEFT, "OUTBOUND_ALLOW": [f"127.0.0.1:{fake_http.port}"]}
    with guarded_client(timeout_s=2) as client, pytest.raises(OutboundBlocked):
        client.get(f"http://127.0.0.1:{listener.port}/")
    assert fake_http.requests == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), (None, None), ("", None), ("soon", None)],
)
def test_retry_after_in_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(42)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now.timestamp()) == 0.0
