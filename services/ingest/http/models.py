"""Bodies of the ingest HTTP API: the request and response models.

Every 4xx answer has one shape, `ErrorResponse`: a list of `{index, field, code,
message}` where `index` is the event's position in the request (null when the request
as a whole is wrong) and `field` a dotted path such as `numeric.age`. Codes are the
ingest rejection codes (`services.ingest.rules.Code`) for schema violations, plus the
request-level codes in `RequestCode`. How a body becomes events is in `parsing`,
how an error becomes a response in `errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "MAX_ERRORS",
    "AcceptedResponse",
    "ErrorDetail",
    "ErrorResponse",
    "EventIn",
    "HealthResponse",
    "ReadyResponse",
    "RequestCode",
]

MAX_ERRORS = 1000  # per response; `error_count` and `invalid_indices` stay complete


class RequestCode(StrEnum):
    INVALID_BODY = "invalid_body"  # 400: not JSON / not a DataEventBatch
    EMPTY = "empty"  # 422: no events
    TOO_LARGE = "too_large"  # 413: body bytes or event count over the limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    NOT_FOUND = "not_found"  # 404: no such route
    UNKNOWN_DATASET = "unknown_dataset"  # 404
    UNKNOWN_VERSION = "unknown_version"  # 404
    AMBIGUOUS = "ambiguous"  # 409: a version prefix that matches several versions
    DATASET_MISMATCH = "dataset_mismatch"  # 422: event names another dataset than the path
    INVALID = "invalid"  # 422: any other malformed value
    UNAVAILABLE = "unavailable"  # 503: Kafka did not confirm delivery; safe to retry
    INTERNAL = "internal"  # 500


class ErrorDetail(BaseModel):
    index: int | None = Field(default=None, description="event position; null: whole request")
    field: str = Field(default="", description="dotted path, e.g. numeric.age")
    code: str
    message: str


class ErrorResponse(BaseModel):
    errors: list[ErrorDetail] = Field(description=f"at most {MAX_ERRORS}, in event order")
    error_count: int = Field(description="all errors found, including any not listed")
    invalid_indices: list[int] = Field(
        default_factory=list, description="every event with at least one error"
    )

    @classmethod
    def of(cls, errors: Sequence[ErrorDetail]) -> ErrorResponse:
        invalid = sorted({e.index for e in errors if e.index is not None})
        return cls(
            errors=list(errors[:MAX_ERRORS]), error_count=len(errors), invalid_indices=invalid
        )


def _utf8(value: str) -> str:
    value.encode("utf-8")  # lone surrogates ("\ud800" in JSON) cannot become proto strings
    return value


Text = Annotated[str, AfterValidator(_utf8)]


class EventIn(BaseModel):
    """One data event in the JSON form; maps hold the features (absent key = null)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # wrong types are errors

    event_id: Text = Field(description="unique per dataset; the deduplication key")
    entity_key: Text = Field(description="the Kafka record key")
    event_time_ms: int = Field(ge=-(2**63), le=2**63 - 1, description="epoch milliseconds")
    numeric: dict[Text, float] = Field(default_factory=dict)
    categorical: dict[Text, Text] = Field(default_factory=dict)
    label: float | None = None
    source: Text = Field(default="", description="producing app, for lineage")
    dataset: Text | None = Field(default=None, description="optional; must equal the path's")


class AcceptedResponse(BaseModel):
    dataset: str
    topic: str
    accepted: int
    event_ids: list[str] = Field(description="in request order")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    detail: str
