"""Log lines: one JSON object each in production, text on a laptop, with their context and no secrets."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from observability import logs

BASE_DIR = Path(__file__).resolve().parents[2]


def record(message: str = "Something happened to %s", *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.getLogger("weft.test").makeRecord(
        "weft.test", logging.WARNING, __file__, 1, message, args or ("it",), exc_info, extra=extra
    )
    logs.ContextFilter().filter(made)
    return made


def test_a_json_line_has_the_message_level_logger_and_the_context_ids():
    tokens = [logs.run_id_var.set("run-1"), logs.node_id_var.set("greet"), logs.trace_id_var.set("ab" * 16)]
    try:
        line = logs.JsonFormatter().format(record())
    finally:
        for variable, token in zip((logs.run_id_var, logs.node_id_var, logs.trace_id_var), tokens, strict=True):
            variable.reset(token)
    parsed = json.loads(line)
    assert parsed["message"] == "Something happened to it"
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "weft.test"
    assert (parsed["run_id"], parsed["node_id"], parsed["trace_id"]) == ("run-1", "greet", "ab" * 16)
    assert parsed["time"].endswith("+00:00")


def test_a_json_line_without_context_leaves_the_ids_out():
    parsed = json.loads(logs.JsonFormatter().format(record()))
    assert not {"run_id", "node_id", "trace_id"} & set(parsed)


def test_an_exception_stays_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        line = logs.JsonFormatter().format(record(exc_info=sys.exc_info()))
    assert "\n" not in line
    parsed = json.loads(line)
    assert "Traceback" in parsed["exception"]
    assert "ValueError: bad\nthing" in parsed["exception"]


def test_scalar_extras_are_kept_and_those_named_like_secrets_or_objects_are_not():
    made = record(
        workflow_id="w-1",
        attempt=2,
        api_key="sk-canary",
        password="hunter2",
        auth_token="t0k3n",
        provider=object(),
    )
    parsed = json.loads(logs.JsonFormatter().format(made))
    assert parsed["workflow_id"] == "w-1"
    assert parsed["attempt"] == 2
    assert not {"api_key", "password", "auth_token", "provider"} & set(parsed)
    assert "sk-canary" not in json.dumps(parsed)


def test_a_text_line_puts_the_context_after_the_message():
    token = logs.run_id_var.set("run-9")
    try:
        line = logs.TextFormatter().format(record())
    finally:
        logs.run_id_var.reset(token)
    assert line.endswith("WARNING weft.test: Something happened to it [run=run-9]")


PICK_FORMATS = """
import importlib, json, os, sys
from django.core.exceptions import ImproperlyConfigured
picked = []
for debug, log_format in json.loads(sys.argv[1]):
    os.environ["DEBUG"] = debug
    os.environ.pop("LOG_FORMAT", None)
    if log_format:
        os.environ["LOG_FORMAT"] = log_format
    try:
        settings = importlib.reload(importlib.import_module("config.settings"))
        picked.append(settings.LOGGING["handlers"]["console"]["formatter"])
    except ImproperlyConfigured as error:
        picked.append(str(error))
print(json.dumps(picked))
"""


def new_process(code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a new process with the real settings, in production (DEBUG=0, no LOG_FORMAT)."""
    environment = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="0")
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def test_log_format_is_json_in_production_and_text_with_debug_unless_it_says():
    combinations = [["0", ""], ["1", ""], ["1", "json"], ["0", "text"], ["0", "xml"]]
    done = new_process(PICK_FORMATS, json.dumps(combinations))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["json", "text", "json", "text", "LOG_FORMAT must be json or text."]


def test_a_production_process_writes_json_lines():
    done = new_process("import django, logging; django.setup(); logging.getLogger('weft.probe').warning('hello')")
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "weft.probe", "hello")


def test_a_webhook_token_in_a_logged_path_is_redacted():
    # As Django's request logger names the path of a 4xx.
    line = logs.JsonFormatter().format(record("%s: %s", "Not Found", "/api/v1/hooks/wh_s3cr3t-T0ken_value/"))
    assert json.loads(line)["message"] == "Not Found: /api/v1/hooks/[redacted]/"
    assert "s3cr3t" not in line


def test_a_production_process_never_writes_a_webhook_token_it_was_called_with():
    probe = (
        "import django, logging; django.setup();"
        "logging.getLogger('django.request').warning('%s: %s', 'Forbidden', '/api/v1/hooks/wh_c4nary-secret/?x=1')"
    )
    done = new_process(probe)
    assert done.returncode == 0, done.stderr
    assert "c4nary" not in done.stderr
    assert "/api/v1/hooks/[redacted]/" in done.stderr
