"""Ingest: validate, dead-letter, deduplicate and version data events (DESIGN.md §3).

Schemas, manifests, profiles (PSI) and the store readers are the shared dataset contract
in `services.common.datasets`; ingest is the one service that writes versions.

The layout follows a record through the loop:

- `decode/`: serialized `DataEvent`s of a whole batch straight to columns (`wire`, a
  numba-compiled walk in `kernels`, Arrow for strings, upb for anything unusual).
- `validation` (with `rules`): vectorised per-batch validation against the schema.
- `dedup`: event-id claims in Redis, rebuilt from the sealed versions.
- `pending`: a polled batch's records and a dataset's rows not yet in a version.
- `intake`: one batch through check, claim and finish (pending rows, dead letters).
- `seal/`: when to seal (`policy`), sealing a version (`version`), seals in flight
  (`jobs`), what the sealed versions say (`history`).
- `offsets`: Kafka offsets safe to commit, sealed watermarks for replays.
- `pipeline` (the consume loop, commits, rebalances) with `poller` (polling one batch
  ahead); `http/` (the FastAPI app); `app` (wiring).

The pure parts take no clock and do no I/O (callers pass `now_ms`).
"""
