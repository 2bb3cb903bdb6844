"""Weft's tunables (config/conf.py): each documented in env.example, each read from its variable,
and read in code through one accessor over ``settings.WEFT``."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.conf import BY_NAME, TUNABLES, Tunable, weft_from_environment, weft_settings
from tests.platform.live import PYTHON, server_env

ENV_EXAMPLE = Path(settings.BASE_DIR) / "platform" / "env.example"
READ_BACK = """
import json, django
django.setup()
from django.conf import settings
from config.conf import TUNABLES, weft_settings
print(json.dumps({
    "tunables": {tunable.name: getattr(weft_settings, tunable.name) for tunable in TUNABLES},
    "reaper_beat_s": settings.CELERY_BEAT_SCHEDULE["weft-runs-reap"]["schedule"],
    "retention_beat_s": settings.CELERY_BEAT_SCHEDULE["weft-retention-purge"]["schedule"],
}))
"""


def other_value(tunable: Tunable):
    """A valid value of the tunable's type that is not its default."""
    if tunable.kind is bool:
        return not tunable.default
    if tunable.kind is list:
        return ["10.20.0.0/16", "192.0.2.7"]
    if tunable.kind is str:
        return f"{tunable.default}-other"
    if tunable.default is None:
        return tunable.kind(3)
    return tunable.default + tunable.kind(1 if tunable.kind is int else 0.5)


def as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def test_every_tunable_is_documented_in_env_example():
    text = ENV_EXAMPLE.read_text()
    undocumented = [t.env for t in TUNABLES if not re.search(rf"^(# )?{t.env}=", text, re.MULTILINE)]
    assert undocumented == []


def test_every_tunable_has_a_line_of_doc_and_a_default_of_its_type():
    for tunable in TUNABLES:
        assert tunable.doc.strip(), tunable.name
        assert isinstance(tunable.default, tunable.kind) or (tunable.nullable and tunable.default is None), tunable.name


def test_every_variable_is_honoured_by_the_settings_and_the_accessor():
    """A process started with every variable set to a value other than its default reads those values."""
    expected = {tunable.name: other_value(tunable) for tunable in TUNABLES}
    env = server_env(**{tunable.env: as_text(expected[tunable.name]) for tunable in TUNABLES})
    finished = subprocess.run(
        [PYTHON, "-c", READ_BACK], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    read = json.loads(finished.stdout.strip().splitlines()[-1])
    assert read["tunables"] == expected
    assert read["reaper_beat_s"] == expected["REAPER_INTERVAL_S"]
    assert read["retention_beat_s"] == expected["RETENTION_INTERVAL_S"]


def test_groups_keep_their_place_in_settings_weft():
    weft = weft_from_environment({"WEFT_ENGINE_LEASE_TTL_S": "5", "WEFT_QUOTA_RUNS_PER_DAY": "7"})
    assert weft["ENGINE"]["LEASE_TTL_S"] == 5.0
    assert weft["QUOTAS"]["RUNS_PER_DAY"] == 7
    assert weft["SCHEDULES"]["MISFIRE_GRACE_S"] == BY_NAME["MISFIRE_GRACE_S"].default
    assert weft["SANDBOX_MAX_WORKERS"] == BY_NAME["SANDBOX_MAX_WORKERS"].default


def test_values_written_as_json_before_the_registry_still_read():
    weft = weft_from_environment(
        {
            "WEFT_ENGINE_EMBEDDED_REAPER": "false",
            "WEFT_ENGINE_NODE_TIMEOUT_S": "null",
            "WEFT_ENGINE_MAX_PARALLEL_NODES": "4",
            "WEFT_SANDBOX_USER": '"weft-sandbox"',
            "WEFT_SANDBOX_USER_SHARE": "null",
            "WEFT_SANDBOX_REQUIRE_ISOLATION": "true",
        }
    )
    assert weft["ENGINE"]["EMBEDDED_REAPER"] is False
    assert weft["ENGINE"]["NODE_TIMEOUT_S"] is None
    assert weft["ENGINE"]["MAX_PARALLEL_NODES"] == 4
    assert weft["SANDBOX_USER"] == "weft-sandbox"
    assert weft["SANDBOX_USER_SHARE"] is None
    assert weft["SANDBOX_REQUIRE_ISOLATION"] is True


def test_an_empty_variable_keeps_the_default():
    weft = weft_from_environment({"WEFT_RETENTION_DAYS": "", "WEFT_SANDBOX_USER": " "})
    assert weft["RETENTION_DAYS"] == BY_NAME["RETENTION_DAYS"].default
    assert weft["SANDBOX_USER"] == BY_NAME["SANDBOX_USER"].default


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("WEFT_ENGINE_LEASE_TTL_S", "soon"),
        ("WEFT_JSON_MAX_DEPTH", "6.5"),
        ("WEFT_JSON_MAX_DEPTH", "null"),
        ("WEFT_ENGINE_EMBEDDED_REAPER", "maybe"),
    ],
)
def test_a_value_not_of_its_type_is_a_configuration_error_naming_the_variable(variable, text):
    with pytest.raises(ImproperlyConfigured, match=variable):
        weft_from_environment({variable: text})


def test_the_accessor_reads_a_partial_override_over_the_defaults(settings):
    settings.WEFT = {"ENGINE": {"LEASE_TTL_S": 5.0}, "JSON_MAX_DEPTH": 9}
    assert weft_settings.LEASE_TTL_S == 5.0
    assert weft_settings.JSON_MAX_DEPTH == 9
    assert BY_NAME["HEARTBEAT_S"].default == weft_settings.HEARTBEAT_S
    assert BY_NAME["MISFIRE_GRACE_S"].default == weft_settings.MISFIRE_GRACE_S


def test_the_accessor_sees_a_change_of_settings_weft(settings):
    settings.WEFT = {**settings.WEFT, "QUOTAS": {**settings.WEFT["QUOTAS"], "RUNS_PER_DAY": 3}}
    assert weft_settings.RUNS_PER_DAY == 3
    settings.WEFT = {**settings.WEFT, "QUOTAS": {**settings.WEFT["QUOTAS"], "RUNS_PER_DAY": 4}}
    assert weft_settings.RUNS_PER_DAY == 4


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NODE_TIMEOUT"):
        _ = weft_settings.NODE_TIMEOUT
