"""The one place where errors become HTTP answers, so that no input ever yields a 500."""

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import RateLimited, WeftError

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
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
    if isinstance(exc, (ProtectedError, RestrictedError)):
        return Response(
            {"detail": "Other objects still refer to this one.", "code": "protected"},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)
