"""The ingest HTTP API (FastAPI): `api` builds the app, `events` publishes, `catalog`
browses sealed versions; `parsing`, `models`, `errors` and `deps` serve them.
"""
