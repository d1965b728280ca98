"""`python -m services.trainer`: the trainer service (a known failure is one line, exit 2/1)."""

from services.common.failures import Types, run_main
from services.trainer.app import main


def _known() -> tuple[Types, Types]:
    from services.trainer.specs import ModelSpecError

    return (ModelSpecError,), ()


raise SystemExit(run_main(main, "trainer", _known))
