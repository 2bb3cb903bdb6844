"""A call of a webhook (``POST /api/v1/hooks/<token>/``): from the request to a run, and its answer.

In order: the token names an enabled trigger (404 ``unknown_hook``, 403 ``trigger_disabled``); the
trigger's rate limit (429); with a secret, the signature — the app API's HMAC scheme
(:func:`licensing.authentication.sign` over the method, the path with its query, the date, the
nonce and the body's SHA-256), sent as ``X-Weft-Signature`` with ``X-Weft-Date`` and
``X-Weft-Nonce`` (401, or 409 for a nonce seen before); a replay (the same ``Idempotency-Key``
within 24 h) answers as the first call did and starts nothing; the inputs mapped from the body,
the query and the headers (a 400 naming ``inputs.<name>`` and its ``source``); the version; the
run, started for the workflow's owner (their quotas: 429). Then the answer: 202 with the run's id
at once, or, for a trigger that waits, 200 with the finished run's outputs (or the response
template rendered over them), 202 if the run outlasts the trigger's timeout.

A replayed delivery whose signature is valid answers even if its nonce was seen: it starts nothing,
and a sender that retries the very same request is answered as the first time.

Every call to a known trigger writes one audit row (repeated rate-limit refusals only the first of
each minute, so that a flood does not write a row per call).
"""

import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from django.db import IntegrityError, transaction
from django.http import QueryDict
from django.utils import timezone

from config.conf import weft_settings
from config.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited, WeftError
from config.rate_limits import rate_limit_hit
from history.services import AuditTarget, audit_log_record
from licensing.authentication import DATE_HEADER, NONCE_HEADER, SIGNATURE_WINDOW, sign, signing_time_problem
from licensing.nonces import single_use_claim
from workflows.engine import TemplateRenderError, render_text
from workflows.execution.large_outputs import InlineBudget, output_inlined
from workflows.execution.services import run_start, run_wait_finished
from workflows.models import ReleaseChannel, Run, RunStatus, RunTrigger, WorkflowVersion
from workflows.releases.selectors import flow_latest_released

from .models import HookDelivery, HookNonce, Trigger
from .selectors import IDEMPOTENCY_WINDOW, delivery_for_key, trigger_for_token
from .services import VERSION_DRAFT, VERSION_LATEST

# The HookDelivery row says which trigger started the run.
RUN_TRIGGER = RunTrigger.WEBHOOK
SIGNATURE_HEADER = "X-Weft-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9+/=]{1,128}$")
_MISSING = object()


class SignatureInvalid(WeftError):
    """The trigger has a secret and the call is not signed with it (401)."""

    status_code = 401
    default_code = "bad_signature"


class HookRateLimited(RateLimited):
    def __init__(self, message: str, *, first: bool, **kwargs):
        super().__init__(message, **kwargs)
        #: The first refusal of its window (the one audited).
        self.first = first


@dataclass(frozen=True)
class HookCall:
    """What the delivery needs of the request."""

    token: str
    method: str
    #: The path with its query string, as it was signed.
    full_path: str
    #: Case-insensitive (``request.headers``).
    headers: Mapping[str, str]
    query: QueryDict
    body: bytes
    content_type: str
    address: str


@dataclass(frozen=True)
class HookAnswer:
    status: int
    body: str
    content_type: str
    run_id: uuid.UUID
    replayed: bool = False


def hook_deliver(*, call: HookCall) -> HookAnswer:
    """Answer one call of a webhook (see the module's docstring); refusals raise the API's errors."""
    trigger = trigger_for_token(token=call.token)
    if trigger is None:
        raise NotFound("No webhook has this URL (its token may have been rotated).", code="unknown_hook")
    try:
        answer = _deliver(trigger=trigger, call=call)
    except WeftError as exc:
        if not isinstance(exc, HookRateLimited) or exc.first:
            _audit(trigger=trigger, call=call, status=exc.status_code, code=exc.code)
        raise
    _audit(trigger=trigger, call=call, status=answer.status, run_id=answer.run_id, replayed=answer.replayed)
    return answer


def _deliver(*, trigger: Trigger, call: HookCall) -> HookAnswer:
    if not trigger.enabled:
        raise Forbidden("This webhook is switched off.", code="trigger_disabled")
    decision = rate_limit_hit(key=f"hook:{trigger.pk}", limit=trigger.rate_limit_per_minute, window_s=60)
    if not decision.allowed:
        raise HookRateLimited(
            f"This webhook may be called {decision.limit} times a minute.",
            first=decision.count == decision.limit + 1,
            retry_after=decision.retry_after,
            limit=decision.limit,
        )
    key = _idempotency_key(call)
    nonce = _signature_check(trigger=trigger, call=call) if trigger.secret else None
    if key:
        delivery = delivery_for_key(trigger=trigger, idempotency_key=key)
        if delivery is not None:
            return _replay(trigger=trigger, delivery=delivery)
    if nonce is not None and not _nonce_claim(trigger=trigger, nonce=nonce):
        raise Conflict("This nonce was already used; sign every delivery with a fresh one.", code="replayed_nonce")
    inputs = _mapped_inputs(trigger=trigger, call=call)
    flow = _flow(trigger)
    try:
        with transaction.atomic():
            if key:  # a key last used over 24 h ago names a new delivery
                HookDelivery.objects.filter(
                    trigger=trigger, idempotency_key=key, created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW
                ).update(idempotency_key="")
            run = run_start(
                workflow=trigger.workflow, user=None, inputs=inputs, trigger=RUN_TRIGGER, flow=flow, in_request=True
            )
            delivery = HookDelivery.objects.create(trigger=trigger, run=run, idempotency_key=key)
    except IntegrityError:
        # The same key, delivered at the same moment: the first one's run is the only one.
        delivery = delivery_for_key(trigger=trigger, idempotency_key=key) if key else None
        if delivery is None:
            raise
        return _replay(trigger=trigger, delivery=delivery)
    except InvalidInput as exc:
        _name_source(exc, trigger=trigger)
        raise
    return _answer(trigger=trigger, delivery=delivery, run=run)


def _idempotency_key(call: HookCall) -> str:
    key = call.headers.get(IDEMPOTENCY_HEADER, "")
    if key and not _IDEMPOTENCY_KEY.match(key):
        raise InvalidInput(
            "An Idempotency-Key is 1 to 255 visible ASCII characters.", field=IDEMPOTENCY_HEADER, code="invalid_key"
        )
    return key


def _signature_check(*, trigger: Trigger, call: HookCall) -> str:
    """The nonce of a call signed with the trigger's secret; else SignatureInvalid."""
    signature = call.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        raise SignatureInvalid(
            f"This webhook is signed: send {SIGNATURE_HEADER}, {DATE_HEADER} and {NONCE_HEADER}.",
            field=SIGNATURE_HEADER,
            code="signature_required",
        )
    date = call.headers.get(DATE_HEADER) or call.headers.get("Date") or ""
    nonce = call.headers.get(NONCE_HEADER, "")
    problem = signing_time_problem(date=date, nonce=nonce)
    if problem is not None:
        header, message = problem
        raise SignatureInvalid(message, field=header)
    expected = sign(
        secret=trigger.secret, method=call.method, path=call.full_path, date=date, nonce=nonce, body=call.body
    )
    if not _SIGNATURE.match(signature) or not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureInvalid("The signature does not match this request.", field=SIGNATURE_HEADER)
    return nonce


def _nonce_claim(*, trigger: Trigger, nonce: str) -> bool:
    """True the first time ``nonce`` signs a call of ``trigger`` (within twice the signature window)."""
    return single_use_claim(
        redis_key=f"weft:hook-nonce:{trigger.pk}:{nonce}",
        ttl=SIGNATURE_WINDOW * 2,
        model=HookNonce,
        trigger=trigger,
        nonce=nonce,
    )


def _body(call: HookCall):
    """The body: JSON, or a form (its fields, last value of each), or {} when empty."""
    if not call.body:
        return {}
    try:
        text = call.body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("The body is not UTF-8 text.", field="body", code="invalid_body") from None
    if call.content_type.partition(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        return QueryDict(text).dict()
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput(
            "The body is not JSON (or a form sent as application/x-www-form-urlencoded).",
            field="body",
            code="invalid_body",
        ) from None


def _walk(value, path: str):
    for segment in path.split(".") if path else []:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
    return value


def _mapped_inputs(*, trigger: Trigger, call: HookCall) -> dict:
    """The start inputs: the body itself without a mapping; else each mapped input found in its source
    (one not found is left out, so that the start node's checks name it if it is required)."""
    if not trigger.input_mapping:
        body = _body(call)
        if not isinstance(body, dict):
            raise InvalidInput(
                "Without an input mapping, the body is a JSON object of the start inputs.",
                field="body",
                code="invalid_body",
            )
        return body
    body = _MISSING
    inputs = {}
    for name, source in trigger.input_mapping.items():
        root, _, rest = source.partition(".")
        if root == "body":
            if body is _MISSING:
                body = _body(call)
            value = _walk(body, rest)
        elif root == "query":
            value = call.query.get(rest, _MISSING)
        else:
            value = call.headers.get(rest, _MISSING)
        if value is not _MISSING:
            inputs[name] = value
    return inputs


def _name_source(exc: InvalidInput, *, trigger: Trigger) -> None:
    """Add to an invalid input's error the part of the request it was mapped from."""
    name = (exc.field or "").removeprefix("inputs.")
    if exc.field and exc.field.startswith("inputs.") and name in trigger.input_mapping:
        exc.extra["source"] = trigger.input_mapping[name]


def _flow(trigger: Trigger) -> WorkflowVersion | None:
    """The version the trigger runs: None for the draft, else the latest released on the API channel."""
    if trigger.version == VERSION_DRAFT:
        return None
    version_range = None if trigger.version == VERSION_LATEST else trigger.version
    flow = flow_latest_released(
        workflow_id=trigger.workflow_id, channel=ReleaseChannel.API, version_range=version_range
    )
    if flow is None:
        raise Conflict(
            f"No version of the workflow released to the API matches this webhook's version ({trigger.version}).",
            field="version",
            code="no_released_version",
        )
    return flow


def _accepted(*, run_id, status: str) -> HookAnswer:
    body = json.dumps({"id": str(run_id), "status": status})
    return HookAnswer(status=202, body=body, content_type="application/json", run_id=run_id)


def _answer(*, trigger: Trigger, delivery: HookDelivery, run: Run) -> HookAnswer:
    if not trigger.wait:
        return _accepted(run_id=run.pk, status=run.status)
    # The operator's bound on how long any request waits for a run (WEFT_WAIT_TIMEOUT_S) bounds this one too.
    finished = run_wait_finished(run=run, timeout=min(trigger.wait_timeout_s, weft_settings.WAIT_TIMEOUT_S))
    if finished is None:
        return _accepted(run_id=run.pk, status=Run.objects.filter(pk=run.pk).values_list("status", flat=True).get())
    answer = _finished_answer(trigger=trigger, run=finished.run)
    HookDelivery.objects.filter(pk=delivery.pk, response_status__isnull=True).update(
        response_status=answer.status, response_content_type=answer.content_type, response_body=answer.body
    )
    return answer


def _finished_answer(*, trigger: Trigger, run: Run) -> HookAnswer:
    """200: the response template over the outputs of a run that succeeded, else the run's end as JSON."""
    outputs = output_inlined(run.outputs, run_id=run.pk, budget=InlineBudget.new())  # if in object storage
    envelope = {"id": str(run.pk), "status": run.status, "outputs": outputs, "error": run.error or None}
    if trigger.response_template and run.status == RunStatus.SUCCEEDED:
        scope = {"outputs": outputs or {}, "run": {"id": str(run.pk), "status": run.status}}
        try:
            text = render_text(trigger.response_template, scope)
        except TemplateRenderError as exc:
            envelope["template_error"] = str(exc)
        else:
            return HookAnswer(status=200, body=text, content_type=trigger.response_content_type, run_id=run.pk)
    return HookAnswer(status=200, body=json.dumps(envelope), content_type="application/json", run_id=run.pk)


def _replay(*, trigger: Trigger, delivery: HookDelivery) -> HookAnswer:
    """The answer of a delivery already made: its stored final answer, else its run's state now."""
    if delivery.response_status is not None:
        return HookAnswer(
            status=delivery.response_status,
            body=delivery.response_body,
            content_type=delivery.response_content_type,
            run_id=delivery.run_id,
            replayed=True,
        )
    return replace(_answer(trigger=trigger, delivery=delivery, run=delivery.run), replayed=True)


def _audit(*, trigger: Trigger, call: HookCall, status: int, code: str = "", run_id=None, replayed=False) -> None:
    """One row per call, written on its own (a refused call's transaction is rolled back)."""
    payload = {"status": status, "address": call.address}
    if code:
        payload["code"] = code
    if run_id is not None:
        payload["run"] = str(run_id)
    if replayed:
        payload["replayed"] = True
    audit_log_record(
        actor="webhook",
        action="hook.call",
        target=AuditTarget(type="hooks.trigger", id=str(trigger.pk), repr=trigger.name or trigger.token_prefix),
        payload=payload,
    )
