from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
    SEVERITY_CRITICAL: _ClassVar[Severity]

class ExperimentDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_DECISION_UNSPECIFIED: _ClassVar[ExperimentDecision]
    EXPERIMENT_DECISION_CONTINUE: _ClassVar[ExperimentDecision]
    EXPERIMENT_DECISION_PROMOTE: _ClassVar[ExperimentDecision]
    EXPERIMENT_DECISION_ROLLBACK: _ClassVar[ExperimentDecision]
    EXPERIMENT_DECISION_INVALID: _ClassVar[ExperimentDecision]

class ModelEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_EVENT_TYPE_UNSPECIFIED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_TRAINING_STARTED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_TRAINING_SKIPPED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_TRAINING_FAILED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_REGISTERED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_GATE_PASSED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_GATE_FAILED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_ALIAS_CHANGED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_DEPLOYED_SHADOW: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_DEPLOYED_CANARY: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_PROMOTED: _ClassVar[ModelEventType]
    MODEL_EVENT_TYPE_ROLLED_BACK: _ClassVar[ModelEventType]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_INFO: Severity
SEVERITY_WARNING: Severity
SEVERITY_CRITICAL: Severity
EXPERIMENT_DECISION_UNSPECIFIED: ExperimentDecision
EXPERIMENT_DECISION_CONTINUE: ExperimentDecision
EXPERIMENT_DECISION_PROMOTE: ExperimentDecision
EXPERIMENT_DECISION_ROLLBACK: ExperimentDecision
EXPERIMENT_DECISION_INVALID: ExperimentDecision
MODEL_EVENT_TYPE_UNSPECIFIED: ModelEventType
MODEL_EVENT_TYPE_TRAINING_STARTED: ModelEventType
MODEL_EVENT_TYPE_TRAINING_SKIPPED: ModelEventType
MODEL_EVENT_TYPE_TRAINING_FAILED: ModelEventType
MODEL_EVENT_TYPE_REGISTERED: ModelEventType
MODEL_EVENT_TYPE_GATE_PASSED: ModelEventType
MODEL_EVENT_TYPE_GATE_FAILED: ModelEventType
MODEL_EVENT_TYPE_ALIAS_CHANGED: ModelEventType
MODEL_EVENT_TYPE_DEPLOYED_SHADOW: ModelEventType
MODEL_EVENT_TYPE_DEPLOYED_CANARY: ModelEventType
MODEL_EVENT_TYPE_PROMOTED: ModelEventType
MODEL_EVENT_TYPE_ROLLED_BACK: ModelEventType

class DataEvent(_message.Message):
    __slots__ = ("event_id", "dataset", "entity_key", "event_time_ms", "numeric", "categorical", "label", "source")
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
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    dataset: str
    entity_key: str
    event_time_ms: int
    numeric: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    label: float
    source: str
    def __init__(self, event_id: _Optional[str] = ..., dataset: _Optional[str] = ..., entity_key: _Optional[str] = ..., event_time_ms: _Optional[int] = ..., numeric: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ..., label: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class DataEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DataEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DataEvent, _Mapping]]] = ...) -> None: ...

class RejectionReason(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    field: str
    message: str
    def __init__(self, code: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RejectedEvent(_message.Message):
    __slots__ = ("source_topic", "source_partition", "source_offset", "original_key", "original_value", "reasons", "dataset", "event_id", "service", "rejected_at_ms")
    SOURCE_TOPIC_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_KEY_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    source_topic: str
    source_partition: int
    source_offset: int
    original_key: bytes
    original_value: bytes
    reasons: _containers.RepeatedCompositeFieldContainer[RejectionReason]
    dataset: str
    event_id: str
    service: str
    rejected_at_ms: int
    def __init__(self, source_topic: _Optional[str] = ..., source_partition: _Optional[int] = ..., source_offset: _Optional[int] = ..., original_key: _Optional[bytes] = ..., original_value: _Optional[bytes] = ..., reasons: _Optional[_Iterable[_Union[RejectionReason, _Mapping]]] = ..., dataset: _Optional[str] = ..., event_id: _Optional[str] = ..., service: _Optional[str] = ..., rejected_at_ms: _Optional[int] = ...) -> None: ...

class FeatureStats(_message.Message):
    __slots__ = ("name", "kind", "count", "null_count", "mean", "std", "min", "max", "bin_edges", "bin_counts", "category_counts")
    class CategoryCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NULL_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    BIN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    count: int
    null_count: int
    mean: float
    std: float
    min: float
    max: float
    bin_edges: _containers.RepeatedScalarFieldContainer[float]
    bin_counts: _containers.RepeatedScalarFieldContainer[int]
    category_counts: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., count: _Optional[int] = ..., null_count: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., bin_edges: _Optional[_Iterable[float]] = ..., bin_counts: _Optional[_Iterable[int]] = ..., category_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class OffsetRange(_message.Message):
    __slots__ = ("topic", "partition", "first_offset", "last_offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FIRST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., first_offset: _Optional[int] = ..., last_offset: _Optional[int] = ...) -> None: ...

class DatasetVersion(_message.Message):
    __slots__ = ("dataset", "version_id", "parent_version_id", "row_count", "schema_hash", "features", "storage_uri", "manifest_uri", "source_offsets", "status", "status_reasons", "min_event_time_ms", "max_event_time_ms", "created_at_ms", "reference_version_id", "shift")
    class ShiftEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_URI_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_URI_FIELD_NUMBER: _ClassVar[int]
    SOURCE_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASONS_FIELD_NUMBER: _ClassVar[int]
    MIN_EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version_id: str
    parent_version_id: str
    row_count: int
    schema_hash: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureStats]
    storage_uri: str
    manifest_uri: str
    source_offsets: _containers.RepeatedCompositeFieldContainer[OffsetRange]
    status: str
    status_reasons: _containers.RepeatedScalarFieldContainer[str]
    min_event_time_ms: int
    max_event_time_ms: int
    created_at_ms: int
    reference_version_id: str
    shift: _containers.ScalarMap[str, float]
    def __init__(self, dataset: _Optional[str] = ..., version_id: _Optional[str] = ..., parent_version_id: _Optional[str] = ..., row_count: _Optional[int] = ..., schema_hash: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureStats, _Mapping]]] = ..., storage_uri: _Optional[str] = ..., manifest_uri: _Optional[str] = ..., source_offsets: _Optional[_Iterable[_Union[OffsetRange, _Mapping]]] = ..., status: _Optional[str] = ..., status_reasons: _Optional[_Iterable[str]] = ..., min_event_time_ms: _Optional[int] = ..., max_event_time_ms: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., reference_version_id: _Optional[str] = ..., shift: _Optional[_Mapping[str, float]] = ...) -> None: ...

class LabelEvent(_message.Message):
    __slots__ = ("label_id", "request_id", "entity_key", "model", "outcome", "event_time_ms")
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    label_id: str
    request_id: str
    entity_key: str
    model: str
    outcome: float
    event_time_ms: int
    def __init__(self, label_id: _Optional[str] = ..., request_id: _Optional[str] = ..., entity_key: _Optional[str] = ..., model: _Optional[str] = ..., outcome: _Optional[float] = ..., event_time_ms: _Optional[int] = ...) -> None: ...

class PredictionLog(_message.Message):
    __slots__ = ("request_id", "time_ms", "model", "version", "variant", "shadow", "entity_key", "numeric", "categorical", "score", "latency_ms", "experiment", "bucket", "looked_up", "feature_age_ms", "defaulted", "error")
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
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    LOOKED_UP_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    time_ms: int
    model: str
    version: str
    variant: str
    shadow: bool
    entity_key: str
    numeric: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    score: float
    latency_ms: float
    experiment: str
    bucket: int
    looked_up: _containers.RepeatedScalarFieldContainer[str]
    feature_age_ms: int
    defaulted: _containers.RepeatedScalarFieldContainer[str]
    error: str
    def __init__(self, request_id: _Optional[str] = ..., time_ms: _Optional[int] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., shadow: _Optional[bool] = ..., entity_key: _Optional[str] = ..., numeric: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ..., score: _Optional[float] = ..., latency_ms: _Optional[float] = ..., experiment: _Optional[str] = ..., bucket: _Optional[int] = ..., looked_up: _Optional[_Iterable[str]] = ..., feature_age_ms: _Optional[int] = ..., defaulted: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ...) -> None: ...

class DriftEvent(_message.Message):
    __slots__ = ("event_id", "model", "version", "window_start_ms", "window_end_ms", "metric", "feature", "slice", "value", "threshold", "severity", "consecutive_windows", "created_at_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    model: str
    version: str
    window_start_ms: int
    window_end_ms: int
    metric: str
    feature: str
    slice: str
    value: float
    threshold: float
    severity: Severity
    consecutive_windows: int
    created_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., metric: _Optional[str] = ..., feature: _Optional[str] = ..., slice: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., severity: _Optional[_Union[Severity, str]] = ..., consecutive_windows: _Optional[int] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class VariantResult(_message.Message):
    __slots__ = ("variant", "version", "requests", "labelled", "metric_value")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    METRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    variant: str
    version: str
    requests: int
    labelled: int
    metric_value: float
    def __init__(self, variant: _Optional[str] = ..., version: _Optional[str] = ..., requests: _Optional[int] = ..., labelled: _Optional[int] = ..., metric_value: _Optional[float] = ...) -> None: ...

class ExperimentEvent(_message.Message):
    __slots__ = ("event_id", "experiment", "model", "window_start_ms", "window_end_ms", "variants", "control_variant", "treatment_variant", "metric", "effect", "ci_low", "ci_high", "p_value", "significant", "srm_detected", "srm_p_value", "guardrail_breaches", "decision", "created_at_ms")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_VARIANT_FIELD_NUMBER: _ClassVar[int]
    TREATMENT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    SRM_DETECTED_FIELD_NUMBER: _ClassVar[int]
    SRM_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_BREACHES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    experiment: str
    model: str
    window_start_ms: int
    window_end_ms: int
    variants: _containers.RepeatedCompositeFieldContainer[VariantResult]
    control_variant: str
    treatment_variant: str
    metric: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool
    srm_detected: bool
    srm_p_value: float
    guardrail_breaches: _containers.RepeatedScalarFieldContainer[str]
    decision: ExperimentDecision
    created_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., experiment: _Optional[str] = ..., model: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[VariantResult, _Mapping]]] = ..., control_variant: _Optional[str] = ..., treatment_variant: _Optional[str] = ..., metric: _Optional[str] = ..., effect: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., srm_detected: _Optional[bool] = ..., srm_p_value: _Optional[float] = ..., guardrail_breaches: _Optional[_Iterable[str]] = ..., decision: _Optional[_Union[ExperimentDecision, str]] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class ModelEvent(_message.Message):
    __slots__ = ("event_id", "model", "version", "type", "alias", "previous_version", "reason", "actor", "traffic_percent", "report_json", "attributes", "created_at_ms")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    model: str
    version: str
    type: ModelEventType
    alias: str
    previous_version: str
    reason: str
    actor: str
    traffic_percent: float
    report_json: str
    attributes: _containers.ScalarMap[str, str]
    created_at_ms: int
    def __init__(self, event_id: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., type: _Optional[_Union[ModelEventType, str]] = ..., alias: _Optional[str] = ..., previous_version: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., traffic_percent: _Optional[float] = ..., report_json: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., created_at_ms: _Optional[int] = ...) -> None: ...
