"""docs/jupyterhub.md's configuration is the example's: every value its ``python`` block sets
is what examples/jupyterhub_config.py (the file tests/systems/test_hub.py runs a real Hub with)
sets, with the example's defaults."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from faces import HUB_EXAMPLE, require_module
from repo import REPO_ROOT

DOC = REPO_ROOT / "docs" / "jupyterhub.md"


def _configured(source: str, filename: str) -> Any:
    require_module("traitlets", "pip install traitlets")
    from traitlets.config import Config

    config = Config()
    namespace = {"c": config, "get_config": lambda: config, "__file__": filename}
    exec(compile(source, filename, "exec"), namespace)
    return config


def test_the_docs_configuration_is_the_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("POPCON_"):
            monkeypatch.delenv(key)
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    documented = _configured(block, str(DOC))
    example = _configured(HUB_EXAMPLE.read_text(encoding="utf-8"), str(HUB_EXAMPLE))
    compared = 0
    for section, values in documented.items():
        for name, value in values.items():
            if name == "services":
                (service,) = value
                (theirs,) = example[section][name]
                assert {k: theirs[k] for k in service} == service
            elif name == "admin_users":
                assert set(example[section][name]) == set(value)
            else:
                assert example[section][name] == value, f"c.{section}.{name}"
            compared += 1
    assert compared >= 8
