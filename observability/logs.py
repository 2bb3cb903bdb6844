"""Log lines that say which run, node and trace they belong to: JSON in production, text on a laptop.

The run, node and trace ids live in context variables, set where a request or a run begins
(``observability.middleware``, ``observability.runs``) and inherited by every task and thread
that starts from there. :class:`ContextFilter` copies them onto each record the console handler
writes; the formatters put them in the line. ``LOG_FORMAT`` (``json`` or ``text``) picks the
formatter in ``config/settings.py``.

Nothing a record carries besides its message, its context ids and plain scalar extras is
written, and extras whose name suggests a secret are left out: what is logged is what the code
chose to say, never an object's dump.
"""

import contextvars
import json
import logging
import re
from datetime import UTC, datetime

run_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("weft_log_run_id", default="")
node_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("weft_log_node_id", default="")
trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("weft_log_trace_id", default="")

CONTEXT_FIELDS = ("run_id", "node_id", "trace_id")
#: Attributes every LogRecord has; anything else on a record came in through ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    *CONTEXT_FIELDS,
}
_SECRET_NAME = re.compile(r"secret|password|passwd|token|api_?key|authori[sz]ation|cookie|credential", re.IGNORECASE)
_SCALARS = (str, int, float, bool, type(None))


#: Paths that carry a credential: a webhook trigger's token (``/api/v1/hooks/<token>/``). Django's
#: request logger names the path of every 4xx and 5xx.
_CREDENTIAL_PATHS = re.compile(r"(/hooks/)[^/\s?#\"']+")


def redacted(text: str) -> str:
    """``text`` with the credentials that paths carry replaced."""
    return _CREDENTIAL_PATHS.sub(r"\1[redacted]", text)


class ContextFilter(logging.Filter):
    """Adds ``run_id``, ``node_id`` and ``trace_id`` (empty when unknown) to every record, and takes
    the credentials a path carries out of its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/hooks/" in message:
            record.msg, record.args = redacted(message), ()
        record.run_id = run_id_var.get()
        record.node_id = node_id_var.get()
        record.trace_id = trace_id_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict:
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _RECORD_ATTRIBUTES
        and not name.startswith("_")
        and isinstance(value, _SCALARS)
        and not _SECRET_NAME.search(name)
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context ids, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "")
            if value:
                line[name] = value
        line["process"] = record.process
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        for name, value in _extras(record).items():
            line.setdefault(name, value)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [run=… node=… trace=…]``, for a person reading a terminal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        values = ((name.removesuffix("_id"), getattr(record, name, "")) for name in CONTEXT_FIELDS)
        context = " ".join(f"{name}={value}" for name, value in values if value)
        if not context:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


def logging_config(*, level: str, log_format: str) -> dict:
    """The ``LOGGING`` setting: one console handler with the context filter and the chosen format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "observability.logs.ContextFilter"}},
        "formatters": {
            "json": {"()": "observability.logs.JsonFormatter"},
            "text": {"()": "observability.logs.TextFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"], "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
