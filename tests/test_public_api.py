"""Every public name is exported, and `__all__` lists exactly what the package means to export."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "contextfold",
    "contextfold.events",
    "contextfold.view",
    "contextfold.compaction",
    "contextfold.models",
    "contextfold.runtime",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__) - {"__version__"}
    public = {n for n in vars(module) if not n.startswith("_") and not isinstance(getattr(module, n), type(module))}
    public -= {"annotations", "importlib", "TYPE_CHECKING", "Any"}
    lazy = set(getattr(module, "_ADAPTERS", {}))  # adapters load on first use; the loop below loads each
    assert public == exported - lazy
    for item in exported:
        assert getattr(module, item) is not None
