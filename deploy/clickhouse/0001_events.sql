-- The queryable history of driftloop's Kafka topics (DESIGN.md §3: the monitor is the
-- only writer). Idempotent sinks: ReplacingMergeTree keyed by the event's own id, and
-- non_replicated_deduplication_window so a replayed block with the same token is dropped.

CREATE TABLE IF NOT EXISTS data_rejected (
    source_topic      LowCardinality(String),
    source_partition  Int32,
    source_offset     Int64,
    dataset           LowCardinality(String),
    event_id          String,
    service           LowCardinality(String),
    reason_codes      Array(LowCardinality(String)),
    reason_fields     Array(String),
    reason_messages   Array(String),
    original_value    String,
    rejected_at       DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dataset_versions (
    dataset            LowCardinality(String),
    version_id         String,
    parent_version_id  String,
    row_count          Int64,
    schema_hash        String,
    status             LowCardinality(String),
    status_reasons     Array(String),
    storage_uri        String,
    manifest_uri       String,
    min_event_time     DateTime64(3, 'UTC'),
    max_event_time     DateTime64(3, 'UTC'),
    created_at         DateTime64(3, 'UTC'),
    features_json      String
) ENGINE = ReplacingMergeTree
ORDER BY (dataset, version_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS predictions (
    request_id   String,
    time         DateTime64(3, 'UTC'),
    model        LowCardinality(String),
    version      LowCardinality(String),
    variant      LowCardinality(String),
    experiment   LowCardinality(String),
    shadow       Bool,
    entity_key   String,
    bucket       Int32,
    feature_names     Array(LowCardinality(String)),
    feature_values    Array(Float64),
    category_names    Array(LowCardinality(String)),
    category_values   Array(String),
    score        Float64,
    latency_ms   Float64
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (model, version, shadow, request_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS labels (
    label_id     String,
    request_id   String,
    entity_key   String,
    model        LowCardinality(String),
    outcome      Float64,
    time         DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (model, label_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS drift_metrics (
    model          LowCardinality(String),
    version        LowCardinality(String),
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    metric         LowCardinality(String),
    feature        LowCardinality(String),
    slice          String,
    value          Float64,
    threshold      Float64,
    breached       Bool,
    computed_at    DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (model, version, metric, feature, slice, window_start)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS drift_events (
    event_id             String,
    model                LowCardinality(String),
    version              LowCardinality(String),
    window_start         DateTime64(3, 'UTC'),
    window_end           DateTime64(3, 'UTC'),
    metric               LowCardinality(String),
    feature              LowCardinality(String),
    slice                String,
    value                Float64,
    threshold            Float64,
    severity             LowCardinality(String),
    consecutive_windows  Int32,
    created_at           DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (model, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS experiment_events (
    event_id            String,
    experiment          LowCardinality(String),
    model               LowCardinality(String),
    window_start        DateTime64(3, 'UTC'),
    window_end          DateTime64(3, 'UTC'),
    control_variant     LowCardinality(String),
    treatment_variant   LowCardinality(String),
    metric              LowCardinality(String),
    effect              Float64,
    ci_low              Float64,
    ci_high             Float64,
    p_value             Float64,
    significant         Bool,
    srm_detected        Bool,
    srm_p_value         Float64,
    guardrail_breaches  Array(String),
    decision            LowCardinality(String),
    variants_json       String,
    created_at          DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (experiment, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS model_events (
    event_id          String,
    model             LowCardinality(String),
    version           LowCardinality(String),
    type              LowCardinality(String),
    alias             LowCardinality(String),
    previous_version  String,
    reason            String,
    actor             String,
    traffic_percent   Float64,
    report_json       String,
    attributes        Map(String, String),
    created_at        DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (model, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
