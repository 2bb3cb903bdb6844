"""Delete the stored outputs of runs that no longer exist (docs/large-outputs.md)."""

from django.core.management.base import BaseCommand

from workflows.execution.large_outputs import ORPHAN_MIN_AGE_S, orphan_objects_sweep


class Command(BaseCommand):
    help = (
        "Delete the objects in STORAGES['outputs'] of runs that no longer exist (deleted with their workflow, "
        f"or by hand), once {ORPHAN_MIN_AGE_S // 60} minutes old. Retention deletes the objects of the runs it purges."
    )

    def handle(self, *args, **options):
        deleted = orphan_objects_sweep()
        self.stdout.write(f"Deleted {deleted} orphan stored output(s).")
