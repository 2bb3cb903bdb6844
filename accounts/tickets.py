"""Websocket tickets: a short-lived, single-use proof of who opens a websocket.

A browser cannot set headers on a websocket, and a token in the query string ends up in proxy
and server logs. So a signed-in caller (session or token) asks ``POST /api/v1/auth/ws-ticket/``
for a ticket and opens ``/ws/...?ticket=<ticket>`` within ``TICKET_TTL_S``. The cache (Redis in
production, shared by every server) holds only the ticket's hash; redeeming deletes it, and only
the caller whose delete removed it gets the user, so a ticket is used once even by racing sockets.
"""

import hashlib
import secrets

from django.core.cache import cache

TICKET_TTL_S = 60
_KEY = "ws-ticket:{}"


def _key(ticket: str) -> str:
    return _KEY.format(hashlib.sha256(ticket.encode("utf-8")).hexdigest())


def ws_ticket_issue(*, user) -> str:
    ticket = secrets.token_urlsafe(32)
    cache.set(_key(ticket), user.pk, timeout=TICKET_TTL_S)
    return ticket


def ws_ticket_redeem(ticket: str) -> int | None:
    """The user id of a live, unused ticket (which is used up now), else None."""
    if not ticket or len(ticket) > 128:
        return None
    key = _key(ticket)
    user_id = cache.get(key)
    if user_id is None or not cache.delete(key):
        return None
    return user_id
