"""`make run`'s banner: the first address it names is the console's."""

import re
import shutil
import subprocess
import sys

from .live import BASE_DIR, server_env


def test_the_serve_banner_names_the_console_first(tmp_path):
    assert shutil.which("make"), "needs GNU make"
    env_file = tmp_path / "dot-env"
    env_file.write_text("DEBUG=1\n")
    # -n prints the recipe (the banner's echo lines included) without serving.
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", f"VENV={sys.prefix}", f"ENV_FILE={env_file}", "PORT=8123"],
        cwd=BASE_DIR,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    banner = [line for line in result.stdout.splitlines() if line.startswith("echo ")]
    urls = re.findall(r"http://[^\s\"]+", "\n".join(banner))
    assert urls[0] == "http://127.0.0.1:8123/"
    assert "console" in banner[0].lower()
    assert {"http://127.0.0.1:8123/admin/", "http://127.0.0.1:8123/api/v1/"} <= set(urls)
    assert any("changepassword demo" in line for line in banner)
