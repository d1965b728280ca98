"""`driftloop datasets list [DATASET] | show VERSION | diff A B | rebuild-features DATASET`.

Sealed dataset versions; `rebuild-features` restores a dataset's online feature store
(Redis) from them.

Reads manifests from the artifact store (`DRIFTLOOP_ARTIFACT_ROOT`, or `--root`); a
version is named by its full id or any unique prefix of it. Known failures (unknown or
ambiguous id, unreadable store) print one `error:` line and exit 1. The catalog (and
with it pyarrow) is imported when a command runs, not when `driftloop` starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from services.common.datasets.catalog import DatasetCatalog, FeatureSummary
    from services.common.datasets.manifest import VersionManifest

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True, help="Sealed dataset versions: list, show, diff; rebuild online features."
)
out = Console()
err = Console(stderr=True)

RootOpt = Annotated[
    str | None, typer.Option("--root", help="artifact store root URI [default: settings]")
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset", "-d", help="look for the version in this dataset only")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]
PSI_ALERT = 0.2  # the ingest default for marking a version suspect


@contextmanager
def _clear_errors() -> Iterator[None]:
    from services.common.artifacts import ArtifactError
    from services.common.datasets.catalog import CatalogError
    from services.common.datasets.schema import SchemaError

    try:
        yield
    except (CatalogError, ArtifactError, SettingsError, SchemaError) as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _catalog(root: str | None) -> DatasetCatalog:
    from services.common.artifacts import ArtifactStore
    from services.common.datasets.catalog import DatasetCatalog

    if root is None:
        return DatasetCatalog.from_settings(load_settings())
    try:
        return DatasetCatalog(ArtifactStore(root))
    except (ValueError, ImportError) as exc:
        raise SettingsError(f"cannot open artifact store {root!r}: {exc}") from None


def _time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _declared() -> list[str]:
    from services.common.datasets.schema import SchemaError, load_schemas
    from services.ingest.config import IngestSettings

    try:
        return sorted(load_schemas(IngestSettings().schemas_dir))
    except SchemaError as exc:
        err.print(f"[yellow]warning:[/yellow] declared schemas not loaded: {exc}", highlight=False)
        return []


def _warn(problems: list[str]) -> None:
    for problem in problems:
        err.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)


@app.command("list")
def list_versions(
    dataset: Annotated[str | None, typer.Argument(help="list this dataset's versions")] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Datasets with their version counts, or one dataset's versions oldest first."""
    from services.common.datasets.catalog import CatalogError, summarize_datasets

    with _clear_errors():
        catalog = _catalog(root)
        if dataset is None:
            stored = {name: catalog.scan(name) for name in catalog.dataset_names()}
            _warn([p for scan in stored.values() for p in scan.problems])
            rows = summarize_datasets(_declared(), {n: s.versions for n, s in stored.items()})
            if as_json:
                print(json.dumps([r.model_dump(mode="json") for r in rows]))
                return
            table = Table("Dataset", "Versions", "Rows", "Suspect", "Latest version", "Latest")
            for r in rows:
                table.add_row(
                    r.name if r.declared else f"{r.name} (undeclared)",
                    str(r.version_count),
                    f"{r.total_rows:,}",
                    str(r.suspect_count),
                    r.latest_version_id or "—",
                    _time(r.latest_created_at_ms),
                )
            out.print(table)
            return
        scan = catalog.scan(dataset)
        _warn(scan.problems)
        if not scan.versions and dataset not in _declared():
            raise CatalogError(f"no dataset named {dataset!r}: not declared and nothing stored")
        if as_json:
            print(json.dumps([json.loads(m.canonical_json()) for m in scan.versions]))
            return
        table = Table("Version", "Created (UTC)", "Rows", "Status", "Parent", "Event time")
        table.title = f"{dataset}: {len(scan.versions)} sealed version(s)"
        for m in scan.versions:
            status = (
                m.status
                if m.status == "ok"
                else f"[red]suspect[/red] {', '.join(m.status_reasons)}"
            )
            span = f"{_time(m.min_event_time_ms)} … {_time(m.max_event_time_ms)}"
            parent = (m.parent_version_id or "—")[:12]
            table.add_row(
                m.version_id, _time(m.created_at_ms), f"{m.row_count:,}", status, parent, span
            )
        out.print(table)


def _feature_cells(f: FeatureSummary | None) -> list[str]:
    if f is None:
        return ["absent", "", "", "", "", "", ""]
    if f.kind == "categorical":
        top = ", ".join(f"{k}={v}" for k, v in (f.top_categories or {}).items())
        return [f"{f.count:,}", f"{f.null_rate:.1%}", f"{f.distinct} distinct", "", "", "", top]
    return [
        f"{f.count:,}",
        f"{f.null_rate:.1%}",
        _num(f.mean),
        _num(f.std),
        _num(f.min),
        _num(f.max),
        "",
    ]


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="version id or unique prefix")],
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version's manifest: lineage, status, and per-feature statistics."""
    from services.common.datasets.catalog import summarize_feature

    with _clear_errors():
        m = _catalog(root).find(version, dataset)
    if as_json:
        print(m.canonical_json())
        return
    status = m.status if m.status == "ok" else f"[red]suspect[/red]: {'; '.join(m.status_reasons)}"
    out.print(f"[bold]{m.dataset}[/bold] version [bold]{m.version_id}[/bold]", highlight=False)
    for label, value in (
        ("parent", m.parent_version_id or "—"),
        ("created", f"{_time(m.created_at_ms)} UTC"),
        ("rows", f"{m.row_count:,}"),
        ("status", status),
        ("schema hash", m.schema_hash),
        ("content hash", m.content_hash),
        ("event time", f"{_time(m.min_event_time_ms)} … {_time(m.max_event_time_ms)} UTC"),
        ("data", m.storage_relpath),
        (
            "sources",
            ", ".join(
                f"{r.topic}[{r.partition}] {r.first_offset}-{r.last_offset}"
                for r in m.source_offsets
            ),
        ),
    ):
        out.print(f"  {label:<13} {value}", highlight=False)
    table = Table(
        "Feature", "Kind", "Count", "Nulls", "Mean", "Std", "Min", "Max", "Top categories"
    )
    for feature in m.features:
        table.add_row(feature.name, feature.kind, *_feature_cells(summarize_feature(feature)))
    out.print(table)


def _resolve_pair(
    a: str, b: str, dataset: str | None, root: str | None
) -> tuple[VersionManifest, VersionManifest]:
    catalog = _catalog(root)
    return catalog.find(a, dataset), catalog.find(b, dataset)


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="base version (id or unique prefix)")],
    b: Annotated[str, typer.Argument(help="compared version (id or unique prefix)")],
    dataset: DatasetOpt = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rows, schema and per-feature statistics of A and B side by side, with PSI of B vs A."""
    from services.common.datasets.catalog import diff_versions

    with _clear_errors():
        ma, mb = _resolve_pair(a, b, dataset, root)
    d = diff_versions(ma, mb)
    if as_json:
        print(d.model_dump_json())
        return
    if ma.dataset != mb.dataset:
        err.print(f"[yellow]note:[/yellow] comparing {ma.dataset!r} with {mb.dataset!r}")
    head = Table("", "A", "B", "Δ")
    head.add_row("version", d.a.version_id, d.b.version_id, "")
    head.add_row("created (UTC)", _time(d.a.created_at_ms), _time(d.b.created_at_ms), "")
    head.add_row("rows", f"{d.a.row_count:,}", f"{d.b.row_count:,}", f"{d.row_delta:+,}")
    head.add_row("status", d.a.status, d.b.status, "")
    changed = "[red]changed[/red]" if d.schema_changed else "same"
    head.add_row("schema hash", d.a.schema_hash[:16], d.b.schema_hash[:16], changed)
    out.print(head)
    table = Table(
        "Feature",
        "Count A",
        "Count B",
        "Nulls A",
        "Nulls B",
        "Mean A",
        "Mean B",
        "Std A",
        "Std B",
        "PSI",
    )
    for f in d.features:
        ca, cb = _feature_cells(f.a), _feature_cells(f.b)
        psi = _num(f.psi)
        if f.psi is not None and f.psi > PSI_ALERT:
            psi = f"[red]{psi}[/red]"
        table.add_row(f.name, ca[0], cb[0], ca[1], cb[1], ca[2], cb[2], ca[3], cb[3], psi)
    out.print(table)


@app.command("rebuild-features")
def rebuild_features(
    dataset: Annotated[str, typer.Argument(help="the dataset whose online features to rebuild")],
    root: RootOpt = None,
) -> None:
    """Rebuild the online feature store (Redis) of DATASET from its sealed versions."""
    import redis

    from services.common.artifacts import ArtifactStore
    from services.common.datasets.store import VersionStore
    from services.common.feature_store import OnlineFeatureStore
    from services.common.redis_client import RedisUnavailableError, check_redis, sync_redis

    with _clear_errors():
        settings = load_settings()
        try:
            store = ArtifactStore(root) if root else ArtifactStore.from_settings(settings)
        except (ValueError, ImportError) as exc:
            raise SettingsError(f"cannot open artifact store {root!r}: {exc}") from None
        storage = VersionStore(store)
        try:
            check_redis(settings)
        except RedisUnavailableError as exc:
            raise SettingsError(str(exc)) from None
        manifests = storage.manifests(dataset)
        client = sync_redis(settings)
        try:
            features = OnlineFeatureStore(client)
            tables = (storage.read_table(m) for m in manifests)
            keys = features.rebuild(dataset, tables)
        except redis.RedisError as exc:
            err.print(f"[bold red]error:[/bold red] Redis failed: {exc}", highlight=False)
            raise typer.Exit(1) from None
        finally:
            client.close()
    out.print(
        f"[green]rebuilt[/green] online features of [bold]{dataset}[/bold]: "
        f"{keys:,} entity keys from {len(manifests)} version(s)",
        highlight=False,
    )
