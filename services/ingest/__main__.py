"""`python -m services.ingest [--http]`: the ingest service (a known failure is one line)."""

from services.common.failures import Types, run_main
from services.ingest.app import main


def _known() -> tuple[Types, Types]:
    from services.ingest.schema import SchemaError

    return (SchemaError,), ()


raise SystemExit(run_main(main, "ingest", _known))
