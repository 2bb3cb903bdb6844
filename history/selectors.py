"""Reads of the audit trail and of usage."""

from django.db.models import Count, QuerySet, Sum

from .models import AuditLog, UsageMetric


def audit_logs_for_actor(*, user) -> QuerySet[AuditLog]:
    """What the user did: the audit rows they are the actor of."""
    return AuditLog.objects.filter(actor=user)


def _totals(metrics: QuerySet[UsageMetric], *group_by: str) -> QuerySet:
    return (
        metrics.order_by()
        .values(*group_by)
        .annotate(
            runs=Count("id"),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
            duration_ms=Sum("duration_ms"),
        )
        .order_by("-tokens_in", "-runs")
    )


def usage_totals_by_user(*, metrics: QuerySet[UsageMetric]) -> QuerySet:
    """One row per user with their run count, tokens and time, most tokens first."""
    return _totals(metrics, "user", "user__username")


def usage_totals_by_app(*, metrics: QuerySet[UsageMetric]) -> QuerySet:
    """One row per app (``app`` is None for runs not made through an app), most tokens first."""
    return _totals(metrics, "app", "app__name", "app__alias_id")


def usage_grand_total(*, metrics: QuerySet[UsageMetric]) -> dict:
    return metrics.order_by().aggregate(
        runs=Count("id"),
        tokens_in=Sum("tokens_in"),
        tokens_out=Sum("tokens_out"),
        duration_ms=Sum("duration_ms"),
    )
