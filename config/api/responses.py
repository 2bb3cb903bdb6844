"""Error answers that views document in the schema: quotas, rate limits and throttles."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class LimitErrorSerializer(serializers.Serializer):
    # A 429 (a quota, an app's rate limit, a throttle) or the 403 of a count quota. (A comment, not
    # a docstring: drf-spectacular would show a docstring as the description.)
    detail = serializers.CharField()
    code = serializers.CharField(required=False, help_text="`quota_exceeded`, `rate_limited` or `throttled`.")
    quota = serializers.CharField(
        required=False,
        help_text="The quota used up: `max_workflows`, `runs_per_day`, `concurrent_runs` or `workflow_runs_per_day`.",
    )
    limit = serializers.IntegerField(required=False)
    resets_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="When the quota resets; null when it frees up otherwise."
    )
    retry_after = serializers.IntegerField(required=False, help_text="Seconds to wait, as in `Retry-After`.")
    throttle = serializers.CharField(required=False, help_text="The throttle's scope, for `throttled`.")
    window_s = serializers.IntegerField(required=False, help_text="The throttle's window in seconds.")


RUN_QUOTA_429 = OpenApiResponse(
    LimitErrorSerializer,
    description="A quota is used up (`quota`: `runs_per_day`, `concurrent_runs` or `workflow_runs_per_day`), "
    "or a rate limit is reached; wait `Retry-After` seconds.",
)
WORKFLOW_QUOTA_403 = OpenApiResponse(
    LimitErrorSerializer, description="You own as many workflows as you may (`quota`: `max_workflows`)."
)
THROTTLED_429 = OpenApiResponse(
    LimitErrorSerializer, description="Too many calls from this address; wait `Retry-After` seconds."
)
