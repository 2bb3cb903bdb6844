"""Write the node reference (docs/nodes.md) from the node registry, or check that it is current."""

import difflib
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows.node_reference import REFERENCE_PATH, reference_markdown

#: The most lines of the difference that ``--check`` shows.
SHOWN_DIFF_LINES = 40


class Command(BaseCommand):
    help = f"Generate the node reference ({REFERENCE_PATH}) from the node registry."

    def add_arguments(self, parser):
        parser.add_argument(
            "--check", action="store_true", help="Write nothing; fail, showing the difference, if the file is stale."
        )
        parser.add_argument("--path", default=None, help=f"The file (default: {REFERENCE_PATH} in the project).")

    def handle(self, *args, check: bool, path: str | None, **options):
        target = Path(path) if path else Path(settings.BASE_DIR) / REFERENCE_PATH
        expected = reference_markdown()
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if check:
            if current is None:
                raise CommandError(f"{target} does not exist: run `python manage.py node_reference`.")
            if current != expected:
                diff = list(
                    difflib.unified_diff(
                        current.splitlines(), expected.splitlines(), f"{target} (committed)", "generated", lineterm=""
                    )
                )
                shown = "\n".join(diff[:SHOWN_DIFF_LINES]) + ("\n..." if len(diff) > SHOWN_DIFF_LINES else "")
                raise CommandError(
                    f"{target} is out of date with the node registry: run `python manage.py node_reference`.\n{shown}"
                )
            self.stdout.write(f"{target} is up to date.")
            return
        if current == expected:
            self.stdout.write(f"{target} is up to date.")
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(expected, encoding="utf-8")
        self.stdout.write(f"Wrote {target}.")
