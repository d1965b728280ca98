"""Ingest: validate, dead-letter, deduplicate and version data events (DESIGN.md §3).

The domain modules here are pure (no I/O, no clock: callers pass `now_ms`):

- `schema`: declared dataset schemas loaded from `deploy/datasets/*.yaml`.
- `validation` (with `columns` and `rules`): vectorised per-batch validation.
- `profiling`: feature statistics, PSI, suspect marking against the reference profile.
- `versioning`: content hash, version id, manifest.
- `sealing`: seal policy, Kafka offset bookkeeping, replay watermarks.
"""
