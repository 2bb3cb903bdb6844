"""``python -m bench``: prepare the database and a live server, run every bench module, print, save."""

import importlib
import json
import logging
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import urlparse

from .context import ROOT, BenchContext, free_port, port_open

RESULTS = ROOT / "bench-results.json"
#: Modules that are parts of the runner, not benchmarks.
NOT_BENCHES = {"context"}


def prepare_environment() -> bool:
    """Settings for this process and its children; True when PostgreSQL and Redis are in use."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("WEFT_SECRET_KEY", "bench-only-not-secret")
    os.environ.setdefault("WEFT_FIELD_ENCRYPTION_KEY", "bench-only-not-secret-either")
    # As in production (no query log), but over plain http on loopback.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    # A line per run started and finished would bury the table.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    database = os.environ.get("DATABASE_URL", "")
    redis = os.environ.get("REDIS_URL", "")
    services = database.startswith("postgres") and bool(redis)
    if not database:
        path = ROOT / "var" / "bench.sqlite3"
        path.parent.mkdir(exist_ok=True)
        for leftover in path.parent.glob("bench.sqlite3*"):
            leftover.unlink()
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    if not services:
        print(
            "bench: warning: the figures are meant for PostgreSQL and Redis (set DATABASE_URL=postgres://... "
            "and REDIS_URL=redis://...); measuring on "
            f"{'SQLite' if not database.startswith('postgres') else 'PostgreSQL'}"
            f"{' without Redis' if not redis else ''} instead.",
            file=sys.stderr,
        )
    return services


def create_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def bench_modules() -> list:
    package = Path(__file__).parent
    modules = []
    for info in sorted(pkgutil.iter_modules([str(package)]), key=lambda info: info.name):
        if info.name.startswith("_") or info.name in NOT_BENCHES:
            continue
        only = os.environ.get("BENCH_ONLY")
        if only and info.name not in only.split(","):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "run", None)):
            modules.append(module)
    # The engine's figures first: node_overhead_ms next to celery_roundtrip_ms.
    return sorted(modules, key=lambda module: (getattr(module, "ORDER", 100), module.__name__))


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'name':<28} {'value':>12} {'unit':<10} {'target':>8}  ok")
    print("-" * 66)
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        target = "" if row.get("target") is None else f"{row['target']:g}"
        ok = {True: "yes", False: "NO", None: ""}[row.get("ok")]
        print(f"{row['name']:<28} {value:>12} {row['unit']:<10} {target:>8}  {ok}")
        if row.get("note"):
            print(f"    {row['note']}")
    print()


def main() -> int:
    started = time.monotonic()
    services = prepare_environment()
    if os.environ["DATABASE_URL"].startswith("postgres"):
        create_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    user, _ = get_user_model().objects.get_or_create(username="weft-bench", defaults={"email": "bench@example.com"})
    _, token = AuthToken.objects.create(user)
    port = free_port()
    ctx = BenchContext(
        base_url=f"http://127.0.0.1:{port}",
        token=token,
        user=user,
        services=services,
        redis_url=os.environ.get("REDIS_URL", ""),
        env=dict(os.environ),
    )
    rows: list[dict] = []
    try:
        ctx.spawn(
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-v",
            "0",
            "config.asgi:application",
            ready=port_open(port),
            name="daphne",
        )
        import httpx

        ctx.client = httpx.Client(base_url=ctx.base_url, headers={"Authorization": f"Token {token}"}, timeout=60)
        for module in bench_modules():
            name = module.__name__.removeprefix("bench.")
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(module.run(ctx))
            except Exception:
                traceback.print_exc()
                ctx.warn(f"the {name} bench failed; its figures are missing.")
    finally:
        ctx.close()
    print_table(rows)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    load = os.getloadavg()
    print(
        f"Wrote {RESULTS.name} ({len(rows)} figures) in {time.monotonic() - started:.0f} s; "
        f"database {django.db.connection.vendor}, {'Redis' if ctx.redis_url else 'no Redis'}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs."
    )
    missed = [row["name"] for row in rows if row.get("ok") is False]
    if missed:
        print(f"Missed their target: {', '.join(missed)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
