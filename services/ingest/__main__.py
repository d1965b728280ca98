"""`python -m services.ingest [--http]`: the ingest service."""

from services.ingest.app import main

raise SystemExit(main())
