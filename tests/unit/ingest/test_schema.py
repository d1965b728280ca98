"""Loading declared dataset schemas: the example loads, bad files name file and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from services.common.datasets.schema import (
    DatasetSchema,
    SchemaError,
    load_schema,
    load_schemas,
    schema_hash,
)
from tests.unit.ingest.conftest import LOANS

REPO = Path(__file__).resolve().parents[3]


def _write(directory: Path, name: str, doc: Any) -> Path:
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def _loans(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(LOANS)
    doc.update(changes)
    return doc


def test_the_example_credit_schema_loads() -> None:
    schemas = load_schemas(REPO / "deploy" / "datasets")
    credit = schemas["credit"]
    assert credit.entity_key == "applicant_id"
    assert len(credit.numeric) == 8 and len(credit.categorical) == 3
    assert credit.label is not None and credit.label.kind == "binary"
    assert "region" in credit.segments
    assert credit.event_time.max_age_ms == credit.event_time.max_age_s * 1000
    assert credit.categorical["loan_purpose"].max_cardinality is not None
    assert credit.categorical["region"].domain is not None


def test_arrow_schema_is_ids_then_features_by_name_then_label(loans: DatasetSchema) -> None:
    arrow = loans.arrow_schema()
    assert arrow.names == [
        "event_id", "entity_key", "event_time_ms",
        "age", "income", "merchant", "region", "score", "label",
    ]  # fmt: skip
    assert arrow.field("age").type == pa.int64() and not arrow.field("age").nullable
    assert arrow.field("income").type == pa.float64() and arrow.field("income").nullable
    assert arrow.field("region").type == pa.string() and not arrow.field("region").nullable


def test_schema_hash_ignores_key_order_domain_order_and_prose(tmp_path: Path) -> None:
    base = load_schema(_write(tmp_path, "a.yaml", LOANS))
    reordered = dict(reversed(list(copy.deepcopy(LOANS).items())))
    reordered["numeric"] = dict(reversed(list(reordered["numeric"].items())))
    reordered["categorical"]["region"]["domain"] = ["south", "north"]
    reordered["description"] = "documentation changes do not change the contract"
    other = load_schema(_write(tmp_path, "b.yaml", reordered))

    assert schema_hash(other) == schema_hash(base)
    assert len(schema_hash(base)) == 64


def test_schema_hash_changes_with_the_contract(loans: DatasetSchema) -> None:
    narrower = _loans()
    narrower["numeric"]["age"]["max"] = 99
    assert schema_hash(DatasetSchema.model_validate(narrower)) != schema_hash(loans)
    no_label = _loans(label=None)
    assert schema_hash(DatasetSchema.model_validate(no_label)) != schema_hash(loans)


def _error(tmp_path: Path, doc: Any) -> str:
    path = _write(tmp_path, "bad.yaml", doc)
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_min_above_max_names_the_field(tmp_path: Path) -> None:
    doc = _loans()
    doc["numeric"]["age"].update(min=50, max=20)
    assert "numeric.age.max: must be >= min" in _error(tmp_path, doc)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["numeric"]["age"].update(mni=3), "numeric.age.mni: Extra inputs"),
        (lambda d: d["numeric"]["age"].update(dtype="decimal"), "numeric.age.dtype:"),
        (lambda d: d["numeric"]["age"].update(min="young"), "numeric.age.min:"),
        (
            lambda d: d["categorical"]["merchant"].update(domain=["a"]),
            "categorical.merchant: declare exactly one of domain",
        ),
        (lambda d: d["categorical"]["region"].update(domain=[]), "categorical.region.domain:"),
        (
            lambda d: d["categorical"]["region"].update(domain=["a", "b", "a"]),
            "categorical.region.domain: lists ['a'] more than once",
        ),
        # YAML reads yes/no as booleans: the operator must quote them
        (lambda d: d["categorical"]["region"].update(domain=[True, False]), "domain.0:"),
        (lambda d: d["categorical"]["merchant"].update(max_cardinality=0), "max_cardinality:"),
        (lambda d: d.update(segments=["colour"]), "segments: ['colour'] are not declared"),
        (lambda d: d["categorical"].update(age={"max_cardinality": 5}), "categorical: ['age']"),
        (lambda d: d["numeric"].update(label={}), "numeric: ['label'] are reserved"),
        (lambda d: d["numeric"].update({"bad name": {}}), "numeric.bad name:"),
        (lambda d: d.update(name="Loans!"), "name: String should match pattern"),
        (lambda d: d["event_time"].pop("max_age_s"), "event_time.max_age_s: Field required"),
        (lambda d: d.update(label={"kind": "binary", "max": 3}), "label.max: a binary label"),
        (lambda d: d.update(numeric={}, categorical={}, segments=[]), "declare at least one"),
    ],
)
def test_bad_schema_names_the_field(tmp_path: Path, change: Any, expected: str) -> None:
    doc = _loans()
    change(doc)
    assert expected in _error(tmp_path, doc)


def test_one_bad_feature_is_reported_once(tmp_path: Path) -> None:
    doc = _loans(segments=["age"])
    doc["numeric"]["age"].update(min=50, max=20)
    message = _error(tmp_path, doc)
    assert "numeric.age.max" in message and "segments" not in message


def test_a_feature_declared_twice_in_yaml_is_an_error(tmp_path: Path) -> None:
    text = yaml.safe_dump(LOANS).replace("numeric:\n", "numeric:\n  score: {}\n", 1)
    assert "key 'score' appears more than once" in _error(tmp_path, text)


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    assert "not valid YAML" in _error(tmp_path, "name: [unclosed\n")
    assert "expected a mapping" in _error(tmp_path, "- just\n- a list\n")
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema(tmp_path / "missing.yaml")


def test_load_schemas_rejects_two_files_declaring_one_dataset(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", LOANS)
    second = _write(tmp_path, "b.yml", LOANS)
    _write(tmp_path, "notes.txt", "not a schema")
    with pytest.raises(SchemaError, match=f"{second}: dataset 'loans' is already declared in"):
        load_schemas(tmp_path)


def test_load_schemas_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        load_schemas(tmp_path / "nowhere")
