"""Router errors -> gRPC statuses with google.rpc details (grpcio-status)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.router.routing import DeadlineExceeded, Unavailable
from services.router.serving_port import FeaturesRejected, VariantNotServed
from services.router.validation import InvalidRequest, NotFound

__all__ = ["abort_with", "bad_request_status", "status_for"]


def bad_request_status(
    code: int, message: str, violations: Sequence[tuple[str, str]]
) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in violations
            ]
        )
    )
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=[detail]))


def _plain(code: int, message: str) -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code, message=message))


def status_for(exc: Exception) -> grpc.Status | None:
    """The status for a known error, or None (a bug: let it surface as INTERNAL)."""
    if isinstance(exc, InvalidRequest):
        return bad_request_status(code_pb2.INVALID_ARGUMENT, "invalid request", exc.violations)
    if isinstance(exc, FeaturesRejected):
        return bad_request_status(code_pb2.INVALID_ARGUMENT, "features rejected", exc.details)
    if isinstance(exc, NotFound):
        return bad_request_status(code_pb2.NOT_FOUND, str(exc), exc.violations)
    if isinstance(exc, VariantNotServed):
        return bad_request_status(
            code_pb2.NOT_FOUND, str(exc), [("model", f"variant {exc.variant!r} is not served")]
        )
    if isinstance(exc, DeadlineExceeded):
        return _plain(code_pb2.DEADLINE_EXCEEDED, str(exc))
    if isinstance(exc, Unavailable):
        return _plain(code_pb2.UNAVAILABLE, str(exc))
    return None


async def abort_with(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    status = status_for(exc)
    if status is None:
        raise exc
    await context.abort_with_status(status)
