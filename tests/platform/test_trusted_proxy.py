"""The client's address comes from a trusted proxy only (config/proxy.py), as the Procfile runs gunicorn and daphne.

A client behind the proxy may send any ``X-Forwarded-For``; the proxy adds the address it saw on
the right. Only that entry is believed, so varying the rest does not escape the sign-in throttle.
"""

import shlex
import time

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured

from config.proxy import TrustedProxyMiddleware, TrustedProxyWSGIMiddleware, client_address, trusted_networks_parse

from .live import BASE_DIR, PYTHON, ServerProcess, database_migrate, free_port, live_database, server_env

PROXIES = trusted_networks_parse(["10.0.0.0/8", "2001:db8:1::/48"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # Not from a trusted proxy: the header is the client's own words, ignored.
        ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),
        # From the proxy: the address it saw (right-most), not what the client wrote before it.
        ("10.0.0.2", ["1.2.3.4, 203.0.113.9"], "203.0.113.9"),
        ("10.0.0.2", ["1.2.3.4", "203.0.113.9"], "203.0.113.9"),
        # Two trusted hops: the first untrusted entry from the right.
        ("10.0.0.2", ["1.2.3.4, 203.0.113.9, 10.0.0.3"], "203.0.113.9"),
        # Garbage stops the walk at the last trusted hop; an empty header leaves the proxy.
        ("10.0.0.2", ["203.0.113.9, not-an-ip, 10.0.0.3"], "10.0.0.3"),
        ("10.0.0.2", [], "10.0.0.2"),
        # Ports and IPv6, as proxies write them.
        ("10.0.0.2", ["[2001:db8:2::5]:4711"], "2001:db8:2::5"),
        ("2001:db8:1::2", ["203.0.113.9:55000"], "203.0.113.9"),
        ("::ffff:10.0.0.2", ["203.0.113.9"], "203.0.113.9"),
    ],
)
def test_the_client_is_the_address_the_trusted_proxy_saw(peer, forwarded_for, client):
    assert client_address(peer, forwarded_for, PROXIES) == client


def test_a_bad_trusted_proxy_is_a_configuration_error_naming_it():
    with pytest.raises(ImproperlyConfigured, match="'10.0.0.0/33'"):
        trusted_networks_parse(["10.0.0.0/33"])


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_the_middleware_sets_the_scopes_client_for_http_and_websockets(kind):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"][0])

    middleware = TrustedProxyMiddleware(app, networks=PROXIES)
    headers = [(b"x-forwarded-for", b"1.2.3.4, 203.0.113.9")]
    await middleware({"type": kind, "client": ["10.0.0.2", 5000], "headers": headers}, None, None)
    await middleware({"type": kind, "client": ["198.51.100.7", 5000], "headers": headers}, None, None)

    assert seen == ["203.0.113.9", "198.51.100.7"]


def test_the_wsgi_middleware_sets_remote_addr_from_a_trusted_proxy_only():
    seen = []

    def app(environ, start_response):
        seen.append(environ["REMOTE_ADDR"])

    middleware = TrustedProxyWSGIMiddleware(app, networks=PROXIES)
    middleware({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9"}, None)
    middleware({"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9"}, None)
    middleware({"REMOTE_ADDR": "10.0.0.2"}, None)

    assert seen == ["203.0.113.9", "198.51.100.7", "10.0.0.2"]


def procfile_command(name: str, port: int) -> list[str]:
    """The Procfile's line ``name`` as a command, with its flags, on ``port`` (its variables dropped)."""
    line = next(
        line for line in (BASE_DIR / "platform" / "Procfile").read_text().splitlines() if line.startswith(f"{name}:")
    )
    words = [word for word in shlex.split(line.removeprefix(f"{name}:")) if "=" not in word or word.startswith("-")]
    port_variable = {"web": "${PORT:-8000}", "ws": "${WS_PORT:-8001}"}[name]
    return [PYTHON, "-m", *[word.replace(port_variable, str(port)) for word in words]]


@pytest.mark.slow
@pytest.mark.parametrize("process", ["web", "ws"])
def test_behind_the_proxy_a_client_cannot_choose_the_address_the_sign_in_throttle_counts(tmp_path, process):
    port = free_port()
    with live_database(tmp_path) as database_url:
        env = server_env(DATABASE_URL=database_url, WEFT_TRUSTED_PROXIES="127.0.0.1", WEFT_THROTTLE_AUTH_TOKEN="3/min")
        database_migrate(env)
        with ServerProcess(procfile_command(process, port), env=env) as server:
            base = f"http://127.0.0.1:{port}"
            server.wait_until_answering(f"{base}/healthz", timeout=60)
            wrong = {"username": "nobody", "password": "wrong"}

            def sign_in(forwarded_for: str) -> int:
                headers = {"X-Forwarded-For": forwarded_for}
                return httpx.post(f"{base}/api/v1/auth/token/", json=wrong, headers=headers, timeout=10).status_code

            # The throttle counts in fixed windows of a minute (config/rate_limits.py): the four calls
            # must fall in one, so a window about to end is waited out.
            left_s = 60 - time.time() % 60
            if left_s < 20:
                time.sleep(left_s + 0.1)
            # The proxy (127.0.0.1) appends the address it saw; the client varies what it wrote.
            spoofed = [sign_in(f"198.51.100.{i}, 203.0.113.9") for i in range(4)]
            other_client = sign_in("203.0.113.10")
            output = server.output

    assert spoofed == [400, 400, 400, 429], output
    assert other_client == 400, output
