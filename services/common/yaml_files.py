"""YAML as the project's config files need it: safe, and refusing duplicate keys.

PyYAML keeps the last of two equal keys silently, so a second `gate:` block would replace
the first without a word; every config file the project reads goes through `load_yaml`.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "load_yaml"]


class DuplicateKeyError(ValueError):
    """A mapping declares the same key twice; names the key and its line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise DuplicateKeyError(f"line {line}: key {key!r} appears more than once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse `text` like `yaml.safe_load`, but refuse duplicate keys (DuplicateKeyError);
    other syntax errors raise `yaml.YAMLError`."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
