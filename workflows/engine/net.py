"""The one way the engine talks to the outside: an SSRF guard under every outbound HTTP call.

Every node or service that calls a URL a user could have chosen (http_request, llm, tools, a
provider test) uses :func:`guarded_async_client` (or :func:`guarded_client`). The guard:

- accepts only ``http`` and ``https`` URLs, on every redirect hop too (redirects are capped);
- resolves the host itself and refuses it if *any* address it resolves to is loopback, private,
  link-local (cloud metadata at 169.254.169.254), carrier-grade NAT, multicast, reserved,
  unspecified or otherwise not public, including IPv4 spelled oddly (``2130706433``,
  ``0x7f.1``, ``127.1``) and IPv4 embedded in IPv6 (``::ffff:127.0.0.1``, 6to4, NAT64, the
  old IPv4-compatible form);
- then connects to exactly the address it checked (the check sits in the connection layer, so
  a DNS answer that changes between check and connect cannot slip through), while the URL, the
  ``Host`` header and TLS SNI/certificate checks keep the name;
- ignores proxy environment variables, applies a timeout, and :func:`read_limited` caps the size
  of a response while it streams.

Operators allow-list what they trust in ``settings.WEFT["OUTBOUND_ALLOW"]``: networks
(``"10.1.0.0/16"``), addresses, host names (``"localhost"``), each optionally with a port
(``"127.0.0.1/32:8080"``, ``"localhost:8080"``, ``"[::1]:8080"``). Settings are read at call
time, so ``override_settings`` works in tests.
"""

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from config.conf import weft_settings

from .errors import NonRetryableError, RetryableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

logger = logging.getLogger(__name__)

ALLOWED_SCHEMES = frozenset({"http", "https"})


class OutboundBlocked(NonRetryableError):
    """The guard refused a URL or an address; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(f"Outbound request refused: {reason}")
        self.reason = reason


class ResponseTooLarge(NonRetryableError):
    """A response grew past its size cap while it was read."""


class OutboundTimeout(RetryableError):
    """An outbound call did not connect or answer in time."""


class OutboundUnavailable(RetryableError):
    """The other side could not be reached or broke the connection."""


# --- Policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowRule:
    """One allow-list entry: a network or a host name, on any port or on one."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    host: str | None
    port: int | None

    @classmethod
    def parse(cls, entry: str) -> "AllowRule":
        text = entry.strip()
        port = None
        if text.startswith("["):
            inner, _, rest = text[1:].partition("]")
            if rest.startswith(":"):
                port = int(rest[1:])
            elif rest:
                raise ValueError(f"Bad OUTBOUND_ALLOW entry {entry!r}.")
            text = inner
        elif text.count(":") == 1:
            text, port_text = text.split(":")
            port = int(port_text)
        try:
            return cls(network=ipaddress.ip_network(text, strict=False), host=None, port=port)
        except ValueError:
            return cls(network=None, host=_normal_host(text), port=port)

    def allows(self, *, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == _normal_host(host)
        return address is not None and address in self.network


@dataclass(frozen=True)
class OutboundPolicy:
    allow: tuple[AllowRule, ...]
    timeout_s: float
    max_bytes: int
    max_redirects: int

    def allows(self, *, host: str, address: IPAddress | None, port: int) -> bool:
        return any(rule.allows(host=host, address=address, port=port) for rule in self.allow)


def outbound_policy() -> OutboundPolicy:
    """The operator's outbound policy, from the ``OUTBOUND_*`` tunables as they are now."""
    return OutboundPolicy(
        allow=tuple(AllowRule.parse(entry) for entry in weft_settings.OUTBOUND_ALLOW),
        timeout_s=float(weft_settings.OUTBOUND_TIMEOUT_S),
        max_bytes=int(weft_settings.OUTBOUND_MAX_BYTES),
        max_redirects=int(weft_settings.OUTBOUND_MAX_REDIRECTS),
    )


# --- Addresses ----------------------------------------------------------------------------------

_BLOCKED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("169.254.0.0/16", "a link-local address (where cloud metadata services live)"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("fc00::/7", "a unique-local (private) IPv6 address"),
        ("fe80::/10", "a link-local IPv6 address"),
        ("fec0::/10", "a site-local IPv6 address"),
        ("ff00::/8", "a multicast address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("2001::/32", "a Teredo address"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address in _NAT64 or address in _SIIT:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be connected to, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            if reason:
                return f"{reason} embedded in an IPv6 address"
    for network, reason in _BLOCKED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if not address.is_global:
        return "not a public address"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as an IP literal means, including legacy IPv4 spellings.

    ``2130706433``, ``0177.0.0.1``, ``0x7f.1`` and ``127.1`` are all 127.0.0.1 to the C resolver,
    so they are read the way it reads them (``inet_aton``) rather than trusted as names.
    """
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        with contextlib.suppress(OSError):
            return ipaddress.IPv4Address(socket.inet_aton(text))
    return None


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def check_address(address: IPAddress, *, host: str, port: int, policy: OutboundPolicy) -> None:
    """Raise :class:`OutboundBlocked` unless ``address`` is public or allow-listed."""
    if policy.allows(host=host, address=address, port=port):
        return
    reason = blocked_reason(address)
    if reason:
        # What a name resolves to stays in the log: the user learns nothing about internal names.
        logger.warning("Outbound request refused: %s (%s) port %s is %s.", host, address, port, reason)
        raise OutboundBlocked(
            f"the address of {host} is not allowed; an operator can allow it in WEFT['OUTBOUND_ALLOW']."
        )


def check_url(url: str | httpx.URL, *, policy: OutboundPolicy | None = None) -> httpx.URL:
    """Check what can be checked before DNS: the URL parses, its scheme, an address written in it."""
    policy = policy or outbound_policy()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise OutboundBlocked(f"the URL is not valid ({exc}).") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise OutboundBlocked(f"the scheme {parsed.scheme or '(none)'!r} is not http or https.")
    if not parsed.host:
        raise OutboundBlocked("the URL has no host.")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = literal_address(parsed.host)
    if address is not None:
        check_address(address, host=parsed.host, port=port, policy=policy)
    return parsed


def _checked_addresses(host: str, port: int, infos, policy: OutboundPolicy) -> list[str]:
    addresses: list[str] = []
    for info in infos:
        text = info[4][0].split("%", 1)[0]
        address = ipaddress.ip_address(text)
        check_address(address, host=host, port=port, policy=policy)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise OutboundUnavailable(f"{host} does not resolve to any address.")
    return addresses


def _literal_or_none(host: str, port: int, policy: OutboundPolicy) -> list[str] | None:
    address = literal_address(host)
    if address is None:
        return None
    check_address(address, host=host, port=port, policy=policy)
    return [str(address)]


async def resolve_checked(host: str, port: int, *, policy: OutboundPolicy) -> list[str]:
    """The addresses of ``host``, all checked; connect to these and nothing else."""
    literal = _literal_or_none(host, port, policy)
    if literal is not None:
        return literal
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundUnavailable(f"{host} could not be resolved ({exc.strerror}).") from exc
    return _checked_addresses(host, port, infos, policy)


def resolve_checked_sync(host: str, port: int, *, policy: OutboundPolicy) -> list[str]:
    literal = _literal_or_none(host, port, policy)
    if literal is not None:
        return literal
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundUnavailable(f"{host} could not be resolved ({exc.strerror}).") from exc
    return _checked_addresses(host, port, infos, policy)


# --- The connection layer -----------------------------------------------------------------------


class _GuardedAsyncBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host, then connects to a checked address (TLS still uses the name)."""

    def __init__(self, policy: OutboundPolicy):
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error: Exception | None = None
        for address in await resolve_checked(host, port, policy=self._policy):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise OutboundBlocked("unix sockets are not reachable from a workflow.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedSyncBackend(httpcore.NetworkBackend):
    def __init__(self, policy: OutboundPolicy):
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        error: Exception | None = None
        for address in resolve_checked_sync(host, port, policy=self._policy):
            try:
                return self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise OutboundBlocked("unix sockets are not reachable from a workflow.")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy):
        super().__init__(trust_env=False)
        # httpx builds its pool without a way to pass a network backend: replace it (httpx is pinned).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedAsyncBackend(policy)
        )


class _GuardedSyncTransport(httpx.HTTPTransport):
    def __init__(self, policy: OutboundPolicy):
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedSyncBackend(policy)
        )


def _client_options(policy, timeout_s, follow_redirects, headers) -> dict:
    return {
        "timeout": httpx.Timeout(timeout_s if timeout_s is not None else policy.timeout_s),
        "follow_redirects": follow_redirects,
        "max_redirects": policy.max_redirects,
        "trust_env": False,
        "headers": headers,
    }


def guarded_async_client(
    *,
    timeout_s: float | None = None,
    follow_redirects: bool = True,
    headers: dict | None = None,
    policy: OutboundPolicy | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every request and redirect hop passes the guard.

    Use it as ``async with guarded_async_client() as client:``; wrap calls in
    :func:`outbound_errors` to get engine errors instead of httpx exceptions.
    """
    policy = policy or outbound_policy()

    async def check_hop(request: httpx.Request) -> None:
        check_url(request.url, policy=policy)

    return httpx.AsyncClient(
        transport=_GuardedAsyncTransport(policy),
        event_hooks={"request": [check_hop]},
        **_client_options(policy, timeout_s, follow_redirects, headers),
    )


def guarded_client(
    *,
    timeout_s: float | None = None,
    follow_redirects: bool = True,
    headers: dict | None = None,
    policy: OutboundPolicy | None = None,
) -> httpx.Client:
    """The blocking twin of :func:`guarded_async_client`, for sync code (a provider test)."""
    policy = policy or outbound_policy()

    def check_hop(request: httpx.Request) -> None:
        check_url(request.url, policy=policy)

    return httpx.Client(
        transport=_GuardedSyncTransport(policy),
        event_hooks={"request": [check_hop]},
        **_client_options(policy, timeout_s, follow_redirects, headers),
    )


# --- Reading answers ----------------------------------------------------------------------------


@contextlib.contextmanager
def outbound_errors() -> Iterator[None]:
    """Turn httpx's exceptions into the engine's: timeouts and broken connections are retryable.

    The messages name the URL the user gave and no more: which port refuses or only times out,
    and the address a name resolved to, are in the log, not in a run's error.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        _log_failure(exc)
        raise OutboundTimeout(f"The request to {_url_of(exc)} timed out.") from exc
    except TimeoutError as exc:
        raise OutboundTimeout("The request timed out.") from exc
    except httpx.TooManyRedirects as exc:
        raise OutboundBlocked(f"too many redirects from {_url_of(exc)}.") from exc
    except httpx.UnsupportedProtocol as exc:
        raise OutboundBlocked(f"the URL is not http or https ({exc}).") from exc
    except httpx.InvalidURL as exc:
        raise OutboundBlocked(f"the URL is not valid ({exc}).") from exc
    except httpx.ConnectError as exc:
        _log_failure(exc)
        raise OutboundUnavailable(f"Could not connect to {_url_of(exc)}.") from exc
    except httpx.TransportError as exc:
        _log_failure(exc)
        raise OutboundUnavailable(f"The request to {_url_of(exc)} failed.") from exc


def _log_failure(exc: httpx.HTTPError) -> None:
    logger.info("Outbound request to %s failed: %s: %s", _url_of(exc), type(exc).__name__, exc)


def _url_of(exc: httpx.HTTPError) -> str:
    try:
        return str(exc.request.url.copy_with(query=None))
    except RuntimeError:
        return "the server"


async def read_limited(response: httpx.Response, *, max_bytes: int) -> bytes:
    """Read a streamed response's (decoded, so a compressed bomb counts) body up to ``max_bytes``.

    Each read has the client's timeout; bound the whole exchange with ``asyncio.timeout`` too, so
    that a server trickling one byte at a time cannot hold the node past its deadline.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"The response from {response.url.host} is larger than {max_bytes} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def iter_lines_limited(response: httpx.Response, *, max_bytes: int) -> AsyncIterator[str]:
    """The lines of a streamed response, with the same size cap as :func:`read_limited`."""
    size = 0
    async for line in response.aiter_lines():
        size += len(line) + 1
        if size > max_bytes:
            raise ResponseTooLarge(f"The response from {response.url.host} is larger than {max_bytes} bytes.")
        yield line


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
