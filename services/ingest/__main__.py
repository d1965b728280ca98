"""`python -m services.ingest [--http]`: the ingest service (a known failure is one line)."""

from services.common.failures import run_main
from services.ingest.app import main

raise SystemExit(run_main(main, "ingest"))
