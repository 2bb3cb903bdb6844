"""The README's API walkthrough, run as written: its ```bash blocks in one shell, with curl, against a
live server set up as `make run` sets one up (SQLite, embedded runs, the demo's printed password)."""

import re
import shutil
import subprocess

from .live import BASE_DIR, daphne, database_migrate, free_port, manage, server_env

README = BASE_DIR / "README.md"
SECTION = "### The same workflow through the API"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
DEMO_LINE = re.compile(r"username: demo\s+password: (\S+)")
STARTUP_TIMEOUT_S = 60


def walkthrough_blocks() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start)
    return BLOCK.findall(text[start : end if end != -1 else None])


def with_server(script: str, *, base_url: str, password: str) -> str:
    """The walkthrough pointed at this server: the two lines a reader edits, edited."""
    script, weft = re.subn(r"^WEFT=\S+$", f"WEFT={base_url}", script, flags=re.MULTILINE)
    script, pw = re.subn(r"^PASSWORD='[^']*'$", f"PASSWORD='{password}'", script, flags=re.MULTILINE)
    assert (weft, pw) == (1, 1), "the walkthrough no longer sets WEFT= and PASSWORD='...' on lines of their own"
    return script


def test_every_curl_command_of_the_readme_is_in_the_walkthrough():
    text = README.read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    everywhere = sum(block.count("curl ") for block in blocks)
    assert everywhere == sum(block.count("curl ") for block in walkthrough_blocks())
    assert everywhere >= 8


def test_the_readme_walkthrough_runs_as_written(tmp_path):
    assert shutil.which("curl"), "the README's walkthrough is curl commands: install curl"
    blocks = walkthrough_blocks()
    env = server_env(DATABASE_URL=f"sqlite:///{tmp_path / 'readme.sqlite3'}", DEBUG="1")
    database_migrate(env)
    password = DEMO_LINE.search(manage("weft_demo", env=env))
    assert password, "weft_demo printed no password for the demo user"
    port = free_port()
    with daphne(port=port, env=env) as server:
        base_url = f"http://127.0.0.1:{port}"
        server.wait_until_answering(f"{base_url}/login/", timeout=STARTUP_TIMEOUT_S)
        script = with_server("\n".join(blocks), base_url=base_url, password=password.group(1))
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\nserver:\n{server.output}"

    out = result.stdout
    assert '{"valid":true}' in out
    assert '"status": "succeeded"' in out
    assert '"advice": "Bring a coat to Oslo."' in out
    events = re.findall(r"^event: (\S+)$", out, re.MULTILINE)
    assert events[0] == "run.started"
    assert "node.succeeded" in events
    assert events[-2:] == ["run.succeeded", "run.finished"]
    assert "Pack light for Lima." in out
