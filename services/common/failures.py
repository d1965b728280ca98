"""Known failures as one clear line: the uniform handler of every CLI command and service.

A user who mistypes a spec or forgets to start the stack should read one line saying what
is wrong and where, not the last line of a 57-line traceback. The exit code says whose
move it is:

- 2 (`EXIT_BAD_INPUT`): the input is wrong — a spec, a schema, a name, an argument; fix it
  and run again;
- 1 (`EXIT_UNAVAILABLE`): a dependency is not there — the broker, Redis, the analytics or
  artifact store; start it (`driftloop stack up`) and run again.

Anything else is a bug and keeps its traceback. `--debug` on the CLI, or
`DRIFTLOOP_DEBUG=1` for any process, shows the traceback of known failures too.
Exception types from services are passed in by their callers (`extra`), since `common`
imports no service; as a function, so that they are imported only when something failed
(the CLI's start-up stays cheap).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = [
    "DEBUG_ENV",
    "EXIT_BAD_INPUT",
    "EXIT_UNAVAILABLE",
    "Extra",
    "classify",
    "debug_enabled",
    "handled",
    "one_line",
    "run_main",
]

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1
DEBUG_ENV = "DRIFTLOOP_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from services.common.artifacts import InvalidArtifactPathError
    from services.common.datasets.catalog import CatalogError
    from services.common.datasets.manifest import ManifestError as DatasetManifestError
    from services.common.datasets.schema import SchemaError
    from services.common.registry.aliases import StaleFenceError
    from services.common.registry.formats import UnsupportedFormatError
    from services.common.registry.manifest import InvalidNameError, ManifestError
    from services.common.registry.promotion import PromotionRefusedError
    from services.common.registry.registry import ModelNotFoundError
    from services.common.settings import SettingsError
    from services.common.yaml_files import DuplicateKeyError

    return (
        SettingsError,
        SchemaError,
        CatalogError,
        DatasetManifestError,
        ManifestError,
        DuplicateKeyError,
        InvalidNameError,
        ModelNotFoundError,
        PromotionRefusedError,
        StaleFenceError,
        UnsupportedFormatError,
        InvalidArtifactPathError,
    )


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import redis
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    from services.common.artifacts import ArtifactError
    from services.common.clickhouse import AnalyticsStoreError

    return (
        ConnectionError,  # KafkaUnavailableError, RedisUnavailableError, refused sockets
        TimeoutError,
        redis.ConnectionError,
        redis.TimeoutError,
        KafkaConnectionError,
        KafkaTimeoutError,
        AnalyticsStoreError,
        ArtifactError,  # a missing or unreadable store, a corrupt object
    )


Types = tuple[type[BaseException], ...]
# A caller's own known failures: () -> (bad input types, unavailable types).
Extra = Callable[[], tuple[Types, Types]]


def _none() -> tuple[Types, Types]:
    return (), ()


def classify(exc: BaseException, extra: Extra = _none) -> int | None:
    """The exit code for a known failure, or None for an unexpected one (a bug)."""
    bad_input, unavailable = extra()
    if isinstance(exc, _bad_input_types() + bad_input):
        return EXIT_BAD_INPUT
    if isinstance(exc, _unavailable_types() + unavailable):
        return EXIT_UNAVAILABLE
    return None


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages joined with "; ")."""
    text = str(exc).strip() or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


@contextmanager
def handled(
    extra: Extra = _none,
    prefix: str = "error",
    write: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Turn a known failure raised inside into `<prefix>: <message>` on stderr and
    SystemExit with its code; with debugging on, the traceback is printed first."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        code = classify(exc, extra)
        if code is None:
            raise
        if debug_enabled():
            traceback.print_exc(file=sys.stderr)
        line = f"{prefix}: {one_line(exc)}"
        if write is not None:
            write(line)
        else:
            print(line, file=sys.stderr, flush=True)
        raise SystemExit(code) from None


def run_main(main: Callable[[], int], service: str, extra: Extra = _none) -> int:
    """A service's `__main__`: run `main`; a known failure ends it with one line."""
    with handled(extra, prefix=f"{service}: error"):
        return main()
    raise AssertionError("unreachable: handled() returns only through main()")
