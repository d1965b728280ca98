"""The dataset contract every service reads: declared schemas (`schema`), sealed versions'
manifests, paths and content hashes (`manifest`), feature profiles, the histogram type and
PSI (`profile`), and the readers of the store layout (`store`, `catalog`).

Ingest writes versions (sealing, reference selection, the live loop stay there); the
trainer, the CLI and every later service read them through this package only.
"""

from services.common.datasets.manifest import (
    ManifestError,
    OffsetRange,
    VersionManifest,
    VersionPaths,
    version_paths,
)
from services.common.datasets.profile import DatasetProfile, FeatureProfile, Histogram, psi
from services.common.datasets.schema import DatasetSchema, SchemaError, load_schema, load_schemas
from services.common.datasets.store import VersionStore

__all__ = [
    "DatasetProfile",
    "DatasetSchema",
    "FeatureProfile",
    "Histogram",
    "ManifestError",
    "OffsetRange",
    "SchemaError",
    "VersionManifest",
    "VersionPaths",
    "VersionStore",
    "load_schema",
    "load_schemas",
    "psi",
    "version_paths",
]
