"""The ClickHouse client, made from one DSN, and the schema migrations.

`chdb://PATH` opens ClickHouse's embedded engine (chDB) in this process; `http(s)://…`
talks to a server. Both go through clickhouse-connect, so the calling code is the same.
A chDB store can be opened by one process at a time (a second one fails with "Error
initializing EmbeddedServer … Cannot lock file …/status"): only the monitor writes it;
the launcher migrates it in a short-lived child process.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from clickhouse_connect.driver.client import Client

from services.common.protogen import REPO_ROOT

__all__ = [
    "MIGRATIONS_DIR",
    "AnalyticsStoreError",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "connect",
    "describe_schema",
    "load_migrations",
]

MIGRATIONS_DIR = REPO_ROOT / "deploy" / "clickhouse"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LEDGER = "schema_migrations"


class AnalyticsStoreError(RuntimeError):
    """The analytics store could not be opened or queried; the message says what to do."""


class MigrationError(AnalyticsStoreError):
    """A migration file is malformed, or an applied one was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        # Migrations are plain DDL; statements end with ';' at the end of a line.
        parts = re.split(r";\s*(?:\n|$)", self.sql)
        cleaned = []
        for part in parts:
            lines = [ln for ln in part.splitlines() if not ln.strip().startswith("--")]
            stmt = "\n".join(lines).strip()
            if stmt:
                cleaned.append(stmt)
        return cleaned


def connect(dsn: str) -> Client:
    """Open the analytics store named by `dsn`, failing with a clear message."""
    import clickhouse_connect

    scheme = urlparse(dsn).scheme
    if scheme not in ("chdb", "http", "https"):
        raise AnalyticsStoreError(
            f"unsupported ClickHouse DSN {dsn!r}: use chdb:///abs/path or http(s)://host:port"
        )
    if scheme == "chdb":
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        text = str(exc)
        hint = ""
        if "lock" in text.lower() or "already initialized" in text.lower():
            hint = (
                " — a chDB store can be opened by one process at a time; another process "
                "(normally the monitor, its single writer) has it open"
            )
        raise AnalyticsStoreError(f"cannot open the analytics store {dsn}: {text}{hint}") from None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file {path} must be named NNNN_snake_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}: {versions}")
    return migrations


def _ensure_ledger(client: Client) -> None:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {_LEDGER} ("
        " version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')"
        ") ENGINE = MergeTree ORDER BY version"
    )


def applied_migrations(client: Client) -> dict[int, tuple[str, str]]:
    _ensure_ledger(client)
    rows = client.query(f"SELECT version, name, checksum FROM {_LEDGER}").result_rows
    return {int(v): (n, c) for v, n, c in rows}


def apply_migrations(client: Client, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply each migration not applied yet, in order; returns those applied now.

    Safe to run twice: applied versions are recorded in `schema_migrations` and skipped; an
    applied migration whose file changed since is refused (write a new migration instead).
    """
    migrations = load_migrations() if migrations is None else migrations
    done = applied_migrations(client)
    applied_now: list[Migration] = []
    for migration in migrations:
        if migration.version in done:
            _name, checksum = done[migration.version]
            if checksum != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} was edited after it "
                    "was applied; add a new migration instead of changing an applied one"
                )
            continue
        for statement in migration.statements():
            try:
                client.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from None
        client.insert(
            _LEDGER,
            [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
            settings={"async_insert": 0},
        )
        applied_now.append(migration)
    return applied_now


def describe_schema(client: Client) -> dict[str, list[tuple[str, str]]]:
    """Tables of the current database with their (column, type) lists, for comparisons."""
    rows = client.query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "ORDER BY table, position"
    ).result_rows
    schema: dict[str, list[tuple[str, str]]] = {}
    for table, name, col_type in rows:
        schema.setdefault(table, []).append((name, col_type))
    return schema
