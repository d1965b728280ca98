from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("request_id", "model", "entity_key", "numeric", "categorical")
    class NumericEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoricalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    entity_key: str
    numeric: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., entity_key: _Optional[str] = ..., numeric: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("request_id", "score", "model", "version", "variant", "latency_ms", "experiment", "bucket")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    score: float
    model: str
    version: str
    variant: str
    latency_ms: float
    experiment: str
    bucket: int
    def __init__(self, request_id: _Optional[str] = ..., score: _Optional[float] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., latency_ms: _Optional[float] = ..., experiment: _Optional[str] = ..., bucket: _Optional[int] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("model", "request_ids", "entity_keys", "feature_names", "values", "rows", "categorical_names", "categorical_values")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEYS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_NAMES_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_VALUES_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    entity_keys: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    rows: int
    categorical_names: _containers.RepeatedScalarFieldContainer[str]
    categorical_values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., request_ids: _Optional[_Iterable[str]] = ..., entity_keys: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., rows: _Optional[int] = ..., categorical_names: _Optional[_Iterable[str]] = ..., categorical_values: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("model", "request_ids", "scores", "versions", "variants", "experiment", "buckets")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    model: str
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    versions: _containers.RepeatedScalarFieldContainer[str]
    variants: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    buckets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model: _Optional[str] = ..., request_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., versions: _Optional[_Iterable[str]] = ..., variants: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., buckets: _Optional[_Iterable[int]] = ...) -> None: ...
