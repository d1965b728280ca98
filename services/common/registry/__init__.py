"""The model registry: immutable versions (artifact + manifest) and aliases with history.

Everything durable lives in the artifact store; Redis, when given, only caches.
"""

from services.common.artifacts import ArtifactIntegrityError, ArtifactNotFoundError
from services.common.registry.aliases import (
    ALIAS_KINDS,
    AliasChange,
    AliasKind,
    AliasLogError,
    AliasState,
    StaleFenceError,
    fold_aliases,
    rollback_target,
    validate_alias,
)
from services.common.registry.formats import (
    ArtifactFormatError,
    UnsupportedFormatError,
    load_artifact,
    save_torch,
    save_xgboost,
)
from services.common.registry.manifest import (
    ArtifactRef,
    CategoricalProfile,
    FeatureSpec,
    Histogram,
    InvalidNameError,
    ManifestError,
    ModelManifest,
    NumericProfile,
    ReferenceProfile,
    RegistrationInfo,
    validate_name,
)
from services.common.registry.registry import LoadedModel, ModelNotFoundError, ModelRegistry

__all__ = [
    "ALIAS_KINDS",
    "AliasChange",
    "AliasKind",
    "AliasLogError",
    "AliasState",
    "ArtifactFormatError",
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactRef",
    "CategoricalProfile",
    "FeatureSpec",
    "Histogram",
    "InvalidNameError",
    "LoadedModel",
    "ManifestError",
    "ModelManifest",
    "ModelNotFoundError",
    "ModelRegistry",
    "NumericProfile",
    "ReferenceProfile",
    "RegistrationInfo",
    "StaleFenceError",
    "UnsupportedFormatError",
    "fold_aliases",
    "load_artifact",
    "rollback_target",
    "save_torch",
    "save_xgboost",
    "validate_alias",
    "validate_name",
]
