"""Sending one notification: a signed webhook POST through the engine's outbound guard, or an email
through Django's email backend. Each raises :class:`SendFailed` saying whether trying again may help."""

import hashlib
import hmac
import smtplib

from django.conf import settings
from django.core.mail import send_mail

from workflows.engine import (
    EngineError,
    RetryableError,
    guarded_client,
    outbound_errors,
    outbound_policy,
    parse_retry_after,
)

#: The header that carries ``sha256=<hex HMAC-SHA256 of the body under the workflow's secret>``.
SIGNATURE_HEADER = "X-Weft-Signature"
#: The delivery's id: the same on every attempt, so that a receiver can drop a repeat.
DELIVERY_HEADER = "X-Weft-Delivery"
EVENT_HEADER = "X-Weft-Event"
#: Answers worth trying again later; any other answer outside 2xx fails the delivery.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Seconds a webhook may take to connect, and for each read or write (at most the operator's outbound timeout).
WEBHOOK_TIMEOUT_S = 10.0


class SendFailed(Exception):
    def __init__(self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def signature(*, secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_post(*, url: str, body: bytes, secret: str, delivery_id: str, event: str) -> int:
    """POST ``body`` (JSON) to ``url``, signed; the answer's status (2xx), else SendFailed.

    Through the outbound guard (no private or loopback address unless the operator allows it), with
    its timeout, no redirects (a signed POST goes where it was told or nowhere), and the answer's
    body left unread.
    """
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Weft-Alerts/1",
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: event,
    }
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret=secret, body=body)
    policy = outbound_policy()
    try:
        with (
            outbound_errors(),
            guarded_client(
                timeout_s=min(WEBHOOK_TIMEOUT_S, policy.timeout_s), follow_redirects=False, policy=policy
            ) as client,
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
    except RetryableError as exc:
        raise SendFailed(str(exc), retryable=True) from exc
    except EngineError as exc:  # refused by the guard, or not a URL it can call
        raise SendFailed(str(exc), retryable=False) from exc
    if 200 <= status < 300:
        return status
    raise SendFailed(
        f"The webhook answered {status}.",
        retryable=status in RETRYABLE_STATUSES,
        status=status,
        retry_after=retry_after,
    )


def email_send(*, address: str, subject: str, text: str) -> None:
    """Send one email through the configured backend (``EMAIL_BACKEND``)."""
    try:
        sent = send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, [address], fail_silently=False)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise SendFailed(f"The mail server refused the message ({type(exc).__name__}).", retryable=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise SendFailed(f"Could not send the email ({type(exc).__name__}).", retryable=True) from exc
    if not sent:
        raise SendFailed("The email backend sent nothing.", retryable=True)
