"""`make run` for real: it migrates, loads the demo, serves on PORT, and the printed password works.

The test reuses the virtualenv running the tests (``VENV=``) instead of creating one, and gives
the server a database of its own; everything else is the Makefile's own path.
"""

import re
import shutil
import subprocess
import sys

import httpx
import pytest

from .live import BASE_DIR, ServerProcess, free_port, live_database, server_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make"),
]

STARTUP_TIMEOUT_S = 120
CODE_WORKFLOW = {
    "name": "Doubler",
    "graph": {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "n", "type": "number"}]}},
            {
                "id": "double",
                "type": "code",
                "config": {
                    "code": "import os\ndef main(n):\n    return {'doubled': n * 2, 'root': os.getuid() == 0}",
                    "inputs": {"n": "{{ start.n }}"},
                },
            },
            {
                "id": "end",
                "type": "end",
                "config": {"outputs": {"doubled": "{{ double.doubled }}", "sandboxed_as_root": "{{ double.root }}"}},
            },
        ],
        "edges": [{"source": "start", "target": "double"}, {"source": "double", "target": "end"}],
    },
}
DEMO_LINE = re.compile(r"username: demo\s+password: (\S+)")
ADMIN_LINE = re.compile(r"username: admin\s+password: (\S+)")


def test_make_run_serves_the_admin_the_api_and_the_docs_with_the_printed_demo_password(tmp_path):
    port = free_port()
    env_file = tmp_path / "dot-env"
    with live_database(tmp_path) as database_url:
        env = server_env(DATABASE_URL=database_url, DEBUG="1", PORT=str(port), HOST="127.0.0.1")
        args = ["make", "--no-print-directory", "run", f"VENV={sys.prefix}", f"ENV_FILE={env_file}"]
        with ServerProcess(args, env=env) as server:
            base = f"http://127.0.0.1:{port}"
            login = server.wait_until_answering(f"{base}/admin/login/", timeout=STARTUP_TIMEOUT_S)
            assert login.status_code == 200
            assert "csrfmiddlewaretoken" in login.text

            for path in ("/api/docs/", "/api/redoc/", "/api/schema/", "/static/admin/css/base.css"):
                assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
            for path in ("/api/v1/", "/api/v1/auth/me/"):
                anonymous = httpx.get(f"{base}{path}", timeout=10)
                assert anonymous.status_code in (200, 401, 403), f"{path} answered {anonymous.status_code}"

            demo_password = DEMO_LINE.search(server.output)
            assert demo_password, f"the demo password was not printed:\n{server.output}"
            token = httpx.post(
                f"{base}/api/v1/auth/token/",
                json={"username": "demo", "password": demo_password.group(1)},
                timeout=10,
            )
            assert token.status_code == 200, token.text
            headers = {"Authorization": f"Token {token.json()['token']}"}
            me = httpx.get(f"{base}/api/v1/auth/me/", headers=headers, timeout=10)
            assert me.json()["username"] == "demo"
            workflows = httpx.get(f"{base}/api/v1/workflows/", headers=headers, timeout=10)
            assert workflows.status_code == 200, workflows.text
            by_name = {w["name"]: w for w in workflows.json()["results"]}
            assert set(by_name) == {"Greeting", "Trip advice", "Trip advice (LLM)"}
            run = httpx.post(
                f"{base}/api/v1/workflows/{by_name['Trip advice']['id']}/runs/",
                json={"inputs": {"city": "Oslo", "temperature": 5}, "wait": True},
                headers=headers,
                timeout=60,
            )
            assert run.status_code == 200, run.text
            assert run.json()["status"] == "succeeded", run.json()
            assert run.json()["outputs"] == {"summary": "Oslo: 5 degrees.", "advice": "Bring a coat to Oslo."}

            # A code node runs in the sandbox, which the server (not root, in CI) starts itself.
            created = httpx.post(f"{base}/api/v1/workflows/", json=CODE_WORKFLOW, headers=headers, timeout=10)
            assert created.status_code == 201, created.text
            coded = httpx.post(
                f"{base}/api/v1/workflows/{created.json()['id']}/runs/",
                json={"inputs": {"n": 20}, "wait": True},
                headers=headers,
                timeout=60,
            )
            assert coded.status_code == 200, coded.text
            assert coded.json()["status"] == "succeeded", coded.json()
            assert coded.json()["outputs"] == {"doubled": 40, "sandboxed_as_root": False}

            admin_password = ADMIN_LINE.search(server.output)
            assert admin_password, f"the admin password was not printed:\n{server.output}"
            with httpx.Client(base_url=base, timeout=10) as browser:
                browser.get("/admin/login/")
                signed_in = browser.post(
                    "/admin/login/?next=/admin/",
                    data={
                        "username": "admin",
                        "password": admin_password.group(1),
                        "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                    },
                    headers={"Referer": f"{base}/admin/login/"},
                    follow_redirects=True,
                )
                assert signed_in.status_code == 200
                assert "Log out" in signed_in.text

    written = env_file.read_text()
    assert "DEBUG=1" in written
    assert re.search(r"^WEFT_SECRET_KEY=\S{50,}$", written, re.MULTILINE)
    assert re.search(r"^WEFT_FIELD_ENCRYPTION_KEY=\S{50,}$", written, re.MULTILINE)


def test_make_run_keeps_an_existing_env_file(tmp_path):
    env_file = tmp_path / "dot-env"
    env_file.write_text("DEBUG=1\nWEFT_SECRET_KEY=mine\n")
    result = subprocess.run(
        ["make", "--no-print-directory", f"VENV={sys.prefix}", f"ENV_FILE={env_file}", str(env_file)],
        cwd=BASE_DIR,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert env_file.read_text() == "DEBUG=1\nWEFT_SECRET_KEY=mine\n"
