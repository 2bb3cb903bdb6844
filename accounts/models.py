from django.contrib.auth.models import AbstractUser
from django.core.validators import MinValueValidator
from django.db import models


class User(AbstractUser):
    """A person using Weft: a builder, or an operator when ``is_staff``.

    A project-owned user model from the start, so that quotas and preferences can be added
    to it later without a swap.
    """

    class Meta:
        db_table = "users"


#: The quotas a UserQuota overrides, by field name; each default is the tunable of the same name in
#: upper case (``weft_settings.RUNS_PER_DAY``, ``WEFT_QUOTA_RUNS_PER_DAY``).
QUOTAS = ("max_workflows", "runs_per_day", "concurrent_runs", "max_run_duration_s", "workflow_runs_per_day")


def _override(help_text: str, **options) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(null=True, blank=True, help_text=f"{help_text} Blank: the default.", **options)


class UserQuota(models.Model):
    """An operator's overrides of the quota defaults (``WEFT_QUOTA_*``) for one user.

    ``workflows.quotas`` reads them; a blank field keeps the default.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, primary_key=True, related_name="quota")
    max_workflows = _override("Workflows the user may own (WEFT_QUOTA_MAX_WORKFLOWS).")
    runs_per_day = _override("Runs the user may start per UTC day (WEFT_QUOTA_RUNS_PER_DAY).")
    concurrent_runs = _override("Runs of the user pending or running at once (WEFT_QUOTA_CONCURRENT_RUNS).")
    max_run_duration_s = _override(
        "Seconds a run of the user may run before it is failed (WEFT_QUOTA_MAX_RUN_DURATION_S).",
        validators=[MinValueValidator(1)],
    )
    workflow_runs_per_day = _override(
        "Runs each workflow the user owns may have per UTC day, whoever starts them (WEFT_QUOTA_WORKFLOW_RUNS_PER_DAY)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "user_quotas"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_run_duration_s__isnull=True) | models.Q(max_run_duration_s__gte=1),
                name="user_quotas_max_run_duration_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"Quotas of {self.user}"


class QuotaCounter(models.Model):
    """A day counter of embedded mode (``workflows.quotas``; Redis holds them when there is one).

    One row per quota and subject (``runs_per_day:user:7``), holding the count of its latest day:
    a new day starts the count again in the same row.
    """

    key = models.CharField(max_length=100, primary_key=True)
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "quota_counters"

    def __str__(self) -> str:
        return f"{self.key} on {self.day}: {self.count}"
