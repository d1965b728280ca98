-- The monitor's own tables (issue 14). The sinks of 0001 stay as they are; these add what
-- the live service computes: every metric row with its window, threshold and alert state,
-- performance (realised and label-free estimate), experiment statistics and incidents.

-- Which kind of window a drift row belongs to ('time': fixed event-time windows; 'rows':
-- chunks of N predictions in time order), whether it is one of the reference's own windows
-- (those set the default thresholds and show how noisy a metric is), and the alert state
-- after this window (ok, pending, firing, clearing) with its consecutive-window count.
ALTER TABLE drift_metrics
    ADD COLUMN IF NOT EXISTS window_kind LowCardinality(String),
    ADD COLUMN IF NOT EXISTS rows UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reference_rows UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS is_reference Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS alert_state LowCardinality(String) DEFAULT '',
    ADD COLUMN IF NOT EXISTS consecutive Int32 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS severity LowCardinality(String) DEFAULT '',
    MODIFY ORDER BY (model, version, metric, feature, slice, window_start, window_kind);

-- A failed prediction (the caller got the champion's fallback): the error-rate guardrail.
ALTER TABLE predictions ADD COLUMN IF NOT EXISTS error String DEFAULT '';

-- Live performance per model version, variant and declared segment ('' = all traffic;
-- 'region=north' …). estimated = true: the label-free (CBPE) estimate from calibrated
-- scores, with its confidence band in ci_low/ci_high; false: realised on joined labels.
CREATE TABLE IF NOT EXISTS performance_metrics (
    model          LowCardinality(String),
    version        LowCardinality(String),
    variant        LowCardinality(String),
    segment        String,
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    metric         LowCardinality(String),
    estimated      Bool,
    value          Float64,
    ci_low         Float64,
    ci_high        Float64,
    rows           UInt64,
    labelled       UInt64,
    computed_at    DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (model, version, variant, segment, metric, estimated, window_start);

-- Per-variant statistics of each running experiment, as of computed_at (cumulative since
-- the experiment's first prediction up to window_end).
CREATE TABLE IF NOT EXISTS experiment_stats (
    experiment       LowCardinality(String),
    model            LowCardinality(String),
    variant          LowCardinality(String),
    version          LowCardinality(String),
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    expected_share   Float64,
    requests         UInt64,
    labelled         UInt64,
    outcome_mean     Float64,
    outcome_std      Float64,
    error_rate       Float64,
    latency_p99_ms   Float64,
    computed_at      DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (experiment, variant, window_end);

-- One row per incident (model, metric, feature, slice); open while closed_at is NULL. The
-- newest row (updated_at) of an incident wins, so opening and clearing are two inserts.
CREATE TABLE IF NOT EXISTS alert_incidents (
    model              LowCardinality(String),
    version            LowCardinality(String),
    metric             LowCardinality(String),
    feature            LowCardinality(String),
    slice              String,
    opened_window      DateTime64(3, 'UTC'),
    last_window        DateTime64(3, 'UTC'),
    closed_window      Nullable(DateTime64(3, 'UTC')),
    peak_value         Float64,
    threshold          Float64,
    severity           LowCardinality(String),
    event_id           String,
    updated_at         DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (model, metric, feature, slice, opened_window);

-- Records the monitor itself could not decode, by their source position (a replay writes
-- the same key, so the sink stays idempotent); the original bytes are kept.
CREATE TABLE IF NOT EXISTS sink_rejected (
    source_topic      LowCardinality(String),
    source_partition  Int32,
    source_offset     Int64,
    reason            String,
    original_key      String,
    original_value    String,
    rejected_at       DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset);
