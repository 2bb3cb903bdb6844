"""Schemathesis against the live server's own OpenAPI schema: every operation, authenticated.

No request may end in a 5xx, and every documented response must match its schema.
"""

import os
import re
import secrets
import subprocess

import pytest

from .live import PYTHON, daphne, database_migrate, free_port, live_database, manage, server_env

pytestmark = pytest.mark.slow

# Per operation in the fuzzing phase; WEFT_SCHEMATHESIS_EXAMPLES overrides. Each CI run draws a new seed,
# so 6 a run (the two big groups take a minute or two each) still add up to a wide search over runs.
MAX_EXAMPLES = int(os.environ.get("WEFT_SCHEMATHESIS_EXAMPLES", 6 if os.environ.get("CI") == "true" else 10))
# The coverage phase (every documented boundary of every parameter, the same cases each run: about
# 3,900 cases and most of the two minutes of the largest group) runs in `make test-fuzz`, a CI step
# of its own; the suite fuzzes with a new seed each run and walks the API's links.
PHASES = os.environ.get("WEFT_SCHEMATHESIS_PHASES", "examples,fuzzing,stateful")

# The operations are split in groups, each against its own server, so that pytest-xdist can run
# them side by side. The app API is called with an app's credentials, everything else with a
# user's token; "everything else" is a negative pattern, so that a new path is never left out.
APP_API = r"^/api/v1/app/"
FIRST_HALF = r"^/api/v1/(workflows|runs|schedules|templates)/"
# Signing out ends the fuzzer's own token, after which every call is a 401: tests/accounts covers it.
LOGOUT = r"^/api/v1/auth/logout"
GROUPS = {
    "workflows-runs-schedules-templates": ("user", ["--include-path-regex", FIRST_HALF]),
    "everything-else": ("user", ["--exclude-path-regex", f"{FIRST_HALF}|{APP_API}|{LOGOUT}"]),
    "app-api": ("app", ["--include-path-regex", APP_API]),
}

# Prints the Authorization header of a user (its API token) and of an app it owns (key:secret).
CREATE_CREDENTIALS = """
from knox.models import AuthToken
from accounts.models import User
from licensing.services import app_create
user = User.objects.create_user("fuzzer", "fuzzer@example.com", "{password}")
app, secret = app_create(owner=user, name="Fuzzer app")
print("Token", AuthToken.objects.create(user)[1])
print("Bearer", f"{{app.api_key}}:{{secret}}")
"""


@pytest.mark.parametrize(("caller", "operations"), GROUPS.values(), ids=GROUPS.keys())
def test_schemathesis_finds_no_server_error_and_no_response_outside_the_schema(tmp_path, caller, operations):
    port = free_port()
    with live_database(tmp_path) as database_url:
        env = server_env(DATABASE_URL=database_url, LOG_LEVEL="ERROR")
        database_migrate(env)
        password = secrets.token_urlsafe(16)
        printed = manage("shell", "-c", CREATE_CREDENTIALS.format(password=password), env=env).splitlines()
        user_auth, app_auth = printed[-2], printed[-1]

        with daphne(port=port, env=env) as server:
            schema_url = f"http://127.0.0.1:{port}/api/schema/?format=json"
            server.wait_until_answering(schema_url, timeout=60)
            result = subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "schemathesis.cli",
                    "run",
                    schema_url,
                    *operations,
                    "--checks",
                    "not_a_server_error,response_schema_conformance",
                    "--header",
                    f"Authorization: {user_auth if caller == 'user' else app_auth}",
                    "--max-examples",
                    str(MAX_EXAMPLES),
                    "--phases",
                    PHASES,
                    "--seed",
                    os.environ.get("SCHEMATHESIS_SEED", str(secrets.randbelow(2**31))),
                    "--generation-database",
                    "none",
                    "--request-timeout",
                    "30",
                    "--no-color",
                ],
                # Its caches (.schemathesis, .hypothesis) go to the test's own directory.
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert result.returncode == 0, (
                f"schemathesis found failures:\n{result.stdout}\n{result.stderr}\n"
                f"--- server log (last 200 lines) ---\n{''.join(server.output.splitlines(True)[-200:])}"
            )
    selected = re.search(r"Selected: (\d+)/\d+", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert selected, result.stdout
    assert tested, result.stdout
    assert int(selected.group(1)) > 0
    assert tested.group(1) == selected.group(1), "some selected operations were not tested"
    refused = refused_operations(result.stdout)
    assert not refused.get(401), f"the credentials were refused:\n{result.stdout}"
    assert set(refused.get(403, [])) <= FORBIDDEN_BY_DESIGN, result.stdout


# Operations that may answer nothing but 403 to the fuzzer for a good reason: the only templates it
# finds are often the official ones, which only operators change.
FORBIDDEN_BY_DESIGN = {
    "PUT /api/v1/templates/{id}/",
    "PATCH /api/v1/templates/{id}/",
    "DELETE /api/v1/templates/{id}/",
}


def refused_operations(stdout: str) -> dict[int, list[str]]:
    """The operations schemathesis saw answer only 401 (or only 403), from its warnings section."""
    refused: dict[int, list[str]] = {}
    groups = r"^(401|403) (?:Unauthorized|Forbidden) \(\d+ operations?\):\n((?:  - .+\n?)+)"
    for match in re.finditer(groups, stdout, re.M):
        refused[int(match.group(1))] = [line.strip()[2:] for line in match.group(2).splitlines()]
    return refused


def test_the_refused_operations_are_read_from_schemathesis_warnings():
    stdout = (
        "Authentication failed: 2 operations returned only 401/403 responses\n\n"
        "403 Forbidden (2 operations):\n  - DELETE /api/v1/templates/{id}/\n  - POST /api/v1/x/\n\n"
        "💡 Ensure valid authentication credentials are set via `--auth` or `-H`\n"
    )
    assert refused_operations(stdout) == {403: ["DELETE /api/v1/templates/{id}/", "POST /api/v1/x/"]}
    assert refused_operations("all fine\n") == {}
