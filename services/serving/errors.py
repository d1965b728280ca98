"""What a caller of serving can get wrong, or find unavailable — typed, so the router maps
each to its own gRPC status (UNAVAILABLE, NOT_FOUND, INVALID_ARGUMENT)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["InvalidFeatures", "ModelNotServed", "ServingError", "ServingUnavailable"]


class ServingError(Exception):
    """Base of serving's errors."""


class ServingUnavailable(ServingError):
    """Ray Serve cannot be reached, or no replica answered within the retries/deadline."""


class ModelNotServed(ServingError):
    """No deployment serves `variant` of `model`; `served` lists what is deployed."""

    def __init__(self, model: str, variant: str, served: Iterable[str] = ()) -> None:
        self.model, self.variant, self.served = model, variant, sorted(served)
        super().__init__(
            f"model {model!r} variant {variant!r} is not served; served variants of "
            f"{model!r}: {self.served or 'none'}"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, list[str]]]:
        return type(self), (self.model, self.variant, self.served)


class InvalidFeatures(ServingError):
    """The request's columns cannot be scored; `details` is one (field, problem) per fault."""

    def __init__(self, details: Sequence[tuple[str, str]]) -> None:
        self.details: list[tuple[str, str]] = [(str(f), str(p)) for f, p in details]
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in self.details))

    def __reduce__(self) -> tuple[type, tuple[list[tuple[str, str]]]]:
        return type(self), (self.details,)
