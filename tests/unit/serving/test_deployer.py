"""Registry aliases → Serve applications: the reconcile plan (pure)."""

from __future__ import annotations

from services.serving.deployer import desired_variants, plan
from services.serving.deployment import app_name, parse_app_name
from services.serving.state import DeployedVariant


def _v(model: str, variant: str, version: int) -> DeployedVariant:
    return DeployedVariant(model=model, variant=variant, version=version)


def test_served_aliases_become_variants_and_others_do_not() -> None:
    desired = desired_variants(
        {"credit": {"champion": 3, "challenger": 4, "old-best": 1}, "fraud": {}},
        ["champion", "challenger", "shadow"],
    )
    assert desired == {
        "credit.champion": _v("credit", "champion", 3),
        "credit.challenger": _v("credit", "challenger", 4),
    }


def test_plan_deploys_swaps_and_removes() -> None:
    deployed = {
        "credit.champion": _v("credit", "champion", 3),
        "credit.shadow": _v("credit", "shadow", 2),
    }
    desired = {
        "credit.champion": _v("credit", "champion", 4),  # promoted: hot swap
        "credit.challenger": _v("credit", "challenger", 5),  # new variant
    }
    changes = plan(desired, deployed)
    assert [(c.kind, c.app) for c in changes] == [
        ("deploy", "credit.challenger"),
        ("swap", "credit.champion"),
        ("remove", "credit.shadow"),
    ]
    swap = changes[1]
    assert swap.previous is not None and swap.target is not None
    assert (swap.previous.version, swap.target.version) == (3, 4)


def test_plan_is_empty_when_everything_matches() -> None:
    state = {"credit.champion": _v("credit", "champion", 3)}
    assert plan(dict(state), dict(state)) == []


def test_plan_scoped_to_models_touches_nothing_else() -> None:
    deployed = {
        "credit.champion": _v("credit", "champion", 3),
        "fraud.champion": _v("fraud", "champion", 1),
    }
    desired = {"credit.champion": _v("credit", "champion", 4)}  # fraud not read
    changes = plan(desired, deployed, models=["credit"])
    assert [(c.kind, c.app) for c in changes] == [("swap", "credit.champion")]


def test_an_adopted_application_of_unknown_version_is_redeployed() -> None:
    changes = plan({"credit.champion": _v("credit", "champion", 3)}, {"credit.champion": None})
    assert [(c.kind, c.app) for c in changes] == [("swap", "credit.champion")]


def test_application_names_round_trip() -> None:
    assert parse_app_name(app_name("credit-default", "champion")) == ("credit-default", "champion")
    assert parse_app_name("default") is None
