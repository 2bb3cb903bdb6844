"""The one place where errors become HTTP answers, so that no input ever yields a 500."""

import logging

import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.db.models import ProtectedError, RestrictedError
from django.http import JsonResponse
from django.views import defaults
from kombu.exceptions import OperationalError as BrokerUnavailable
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from config.api.parsers import RequestTooLarge
from config.errors import RateLimited, WeftError

logger = logging.getLogger(__name__)

#: What a request meets while PostgreSQL, the broker or Redis restarts.
UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    BrokerUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        # Django's own check of request.body (read by the app API's signature check).
        exc = RequestTooLarge(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    if isinstance(exc, WeftError):
        response = Response(exc.as_dict(), status=exc.status_code)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, DjangoValidationError):
        return Response(as_serializer_error(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IntegrityError):
        # A unique or check constraint lost a race with another request: the caller may retry.
        logger.info("integrity error answered as 409: %s", type(exc).__name__)
        return Response(
            {"detail": "This conflicts with the current state of the data; reload and retry.", "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, (DataError, OverflowError)):
        # The database refused a value from the request (out of range, not storable): the
        # caller's input, not a server fault.
        logger.info("data error answered as 400: %s", type(exc).__name__)
        return Response(
            {"detail": "A value in the request is out of range or cannot be stored.", "code": "invalid_value"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, UNAVAILABLE):
        # The database, the broker or the cache is down or restarting (a failover, a restart): not
        # the caller's fault, and worth retrying in a moment, in the contract's JSON rather than an
        # HTML 500 page.
        logger.warning("unavailable service answered as 503: %s: %s", type(exc).__name__, exc)
        response = Response(
            {"detail": "The service is unavailable for a moment; retry.", "code": "service_unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = "1"
        return response
    if isinstance(exc, (ProtectedError, RestrictedError)):
        return Response(
            {"detail": "Other objects still refer to this one.", "code": "protected"},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)


def bad_request(request, exception):
    """Django's 400 (``handler400``): what fails before or outside a DRF view (a body over
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``, a malformed form) answers under /api/ in the API's JSON shape,
    with a 413 for a body too large; the pages keep Django's HTML 400."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        error = RequestTooLarge(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return JsonResponse(error.as_dict(), status=error.status_code)
    return JsonResponse({"detail": "The request could not be read.", "code": "bad_request"}, status=400)
