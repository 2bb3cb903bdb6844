"""The client's address, believed from ``X-Forwarded-For`` only when a trusted proxy sent it.

Daphne runs without ``--proxy-headers``: the peer it sees is whoever opened the connection. When
that peer is one of the operator's proxies (``WEFT_TRUSTED_PROXIES``, networks), the client is the
address that proxy saw: the right-most ``X-Forwarded-For`` entry that is not itself a trusted
proxy. Entries further left were written by the client and are never believed, so a client cannot
choose the address that the login and app throttles count. From any other peer the header is
ignored. The result replaces the ASGI scope's ``client``, which Django reads as ``REMOTE_ADDR``
and consumers as ``scope["client"]``, for HTTP and websockets alike; under gunicorn (WSGI), the
environ's ``REMOTE_ADDR``.
"""

import ipaddress
from collections.abc import Iterable, Sequence

from django.core.exceptions import ImproperlyConfigured

from config.conf import weft_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks_parse(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` → networks; a bad entry is a configuration error naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"WEFT_TRUSTED_PROXIES holds networks or addresses (10.0.0.0/8, 127.0.0.1), not {value!r}."
            ) from None
    return tuple(networks)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # 203.0.113.7:443
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return address.ipv4_mapped or address if isinstance(address, ipaddress.IPv6Address) else address


def _trusted(address, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str | None:
    """The client's address: ``peer``, or when ``peer`` is a trusted proxy, the address it saw.

    ``forwarded_for`` are the ``X-Forwarded-For`` header values in the order received. Walking
    from the right, trusted proxies are skipped; the first other entry is the client. An entry
    that is not an address stops the walk at the last trusted hop (nothing left of it is believed).
    """
    current = _address(peer) if peer else None
    if not _trusted(current, networks):
        return peer
    entries = [entry for value in forwarded_for for entry in value.split(",") if entry.strip()]
    for entry in reversed(entries):
        hop = _address(entry)
        if hop is None:
            break
        current = hop
        if not _trusted(hop, networks):
            break
    return str(current)


def _networks(networks: Sequence[Network] | None) -> tuple[Network, ...]:
    return tuple(networks) if networks is not None else trusted_networks_parse(weft_settings.TRUSTED_PROXIES)


class TrustedProxyMiddleware:
    """ASGI middleware: sets ``scope["client"]`` to the client's address (see the module's docstring)."""

    def __init__(self, app, networks: Sequence[Network] | None = None):
        self.app = app
        self.networks = _networks(networks)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and self.networks and scope.get("client"):
            peer = scope["client"][0]
            forwarded_for = [
                value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
            ]
            address = client_address(peer, forwarded_for, self.networks)
            if address != peer:
                # The client's own port is unknown here: 0, as Django's ASGI handler takes none.
                scope = {**scope, "client": [address, 0]}
        await self.app(scope, receive, send)


class TrustedProxyWSGIMiddleware:
    """WSGI middleware: sets ``REMOTE_ADDR`` to the client's address (see the module's docstring)."""

    def __init__(self, app, networks: Sequence[Network] | None = None):
        self.app = app
        self.networks = _networks(networks)

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR")
        if self.networks and peer:
            # A WSGI server joins repeated headers with commas: one value, split by client_address.
            forwarded_for = [environ["HTTP_X_FORWARDED_FOR"]] if environ.get("HTTP_X_FORWARDED_FOR") else []
            address = client_address(peer, forwarded_for, self.networks)
            if address != peer:
                environ = {**environ, "REMOTE_ADDR": address}
        return self.app(environ, start_response)
