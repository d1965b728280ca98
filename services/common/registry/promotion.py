"""Guarded moves of a serving alias: promotion and rollback verify their target first.

Serving loads whatever `champion` points to, so an alias must never be moved to a version
that cannot serve. Before a move the target is checked:

- its artifact exists and its bytes match the sha256 in its manifest (a tampered or
  missing artifact is refused, naming the path);
- its gate passed; a failed gate is refused unless the operator forces it, and a forced
  move is recorded as such in the alias log;
- the move changes something: pointing an alias at the version it already has is refused
  rather than recorded (a no-op would otherwise be "undone" by the next rollback).

The checks are pure reads of immutable versions; the no-op check runs inside the alias
log's compare-and-set, so two concurrent promotions cannot both pass it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.registry.aliases import AliasChange, AliasKind, AliasState
from services.common.registry.registry import ModelNotFoundError, ModelRegistry

__all__ = ["AliasMove", "PromotionRefusedError", "check_target", "promote", "rollback"]


class PromotionRefusedError(ValueError):
    """The target version may not take the alias; the message says why and what to do."""


@dataclass(frozen=True)
class AliasMove:
    change: AliasChange
    gate: str  # "passed", "failed" or "none" (registered without a gate report)


def check_target(registry: ModelRegistry, name: str, version: int, force: bool) -> str:
    """Refuse a version that cannot serve; returns its gate result ("passed"/"failed"/"none")."""
    problem = registry.artifact_problem(name, version)
    if problem is not None:
        raise PromotionRefusedError(f"refusing: {problem}")
    report = registry.manifest(name, version).gate_report
    if not report:
        return "none"
    if report.get("passed"):
        return "passed"
    if not force:
        checks = report.get("checks")
        failed = [
            str(c.get("name"))
            for c in (checks if isinstance(checks, list) else [])
            if isinstance(c, dict) and not c.get("passed")
        ]
        raise PromotionRefusedError(
            f"refusing: {name!r} v{version} failed its gate (failed checks: "
            f"{', '.join(failed) or 'see models show'}); pass --force to override "
            "(recorded as forced)"
        )
    return "failed"


def _move(
    registry: ModelRegistry,
    name: str,
    alias: str,
    version: int,
    *,
    actor: str,
    reason: str,
    kind: AliasKind,
    force: bool,
) -> AliasMove:
    gate = check_target(registry, name, version, force)

    def not_a_no_op(state: AliasState) -> None:
        if state.aliases.get(alias) == version:
            raise PromotionRefusedError(
                f"refusing: {alias} of {name!r} is already v{version}; nothing to change"
            )

    change = registry.set_alias(
        name,
        alias,
        version,
        actor=actor,
        reason=reason,
        kind=kind,
        forced=gate == "failed",
        check=not_a_no_op,
    )
    return AliasMove(change, gate)


def promote(
    registry: ModelRegistry,
    name: str,
    version: int,
    *,
    actor: str,
    reason: str,
    alias: str = "champion",
    force: bool = False,
) -> AliasMove:
    """Point `alias` at `version` after checking it (see the module docstring)."""
    return _move(
        registry, name, alias, version, actor=actor, reason=reason, kind="promote", force=force
    )


def rollback(
    registry: ModelRegistry,
    name: str,
    *,
    actor: str,
    reason: str,
    alias: str = "champion",
    force: bool = False,
) -> AliasMove:
    """Point `alias` back at the version it had before its last move (a stack: successive
    rollbacks keep walking back), after checking that version like a promotion."""
    current = registry.get_alias(name, alias)
    target = registry.rollback_target(name, alias)
    if current is None or target is None:
        raise ModelNotFoundError(
            f"model {name!r} has no earlier {alias} to roll back to "
            f"({alias}: {'v' + str(current) if current else 'none'})"
        )
    return _move(
        registry, name, alias, target, actor=actor, reason=reason, kind="rollback", force=force
    )
