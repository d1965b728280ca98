"""Ingest: validate, dead-letter, deduplicate and version data events (DESIGN.md §3).

Schemas, manifests, profiles (PSI) and the store readers are the shared dataset contract
in `services.common.datasets`; ingest is the one service that writes versions.

The domain modules here are pure (no I/O, no clock: callers pass `now_ms`):

- `wire`: serialized `DataEvent`s of a whole batch straight to columns (a numba-compiled
  walk in `wire_kernels`, Arrow for strings), upb for anything unusual.
- `validation` (with `columns` and `rules`): vectorised per-batch validation.
- `pending`: a polled batch's records and a dataset's rows not yet in a version.
- `sealing`: seal policy, Kafka offset bookkeeping, replay watermarks.

The adapters around them: `pipeline` (the consume loop, commits, rebalances) with
`poller` (polling one batch ahead), `intake` (check, claim, finish a batch), `sealer`
(seals in a worker thread); `dedup` (Redis claims, rebuilt from the sealed versions);
`storage` (writing versions, head and reference selection); `http_*` (the FastAPI app);
`app` (wiring).
"""
