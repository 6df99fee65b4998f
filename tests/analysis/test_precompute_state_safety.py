"""The precompute resume state is never unpickled: a planted pickle is refused and runs nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.precompute import LEGACY_STATE_FILE, STATE_FILE, run_precompute
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.dictionaries.base import DictionaryMetadata
from saescope.errors import ConfigError


class Planted:
    """Unpickling this object runs code: it writes `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _inputs():
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, d_mlp=32, n_heads=2, d_head=8, n_ctx=8, d_vocab=40,
                                  act_fn="relu", seed=1, device="cpu")
    model = HookedTransformer(cfg).eval()
    sae = StandardSAE(32, 8, DictionaryMetadata(hook_name="blocks.0.mlp.hook_post"))
    sae.reset_parameters(torch.Generator().manual_seed(0))
    tokens = np.random.default_rng(0).integers(1, 40, size=(12, 8))
    return model, [("a", sae)], tokens, [f"d{i}" for i in range(12)]


CFG = PrecomputeConfig(progress=False, top_k=2, n_intervals=2, examples_per_interval=1, n_random=1,
                       contexts_per_batch=4, checkpoint_every=1)


@pytest.mark.parametrize("name", [STATE_FILE, LEGACY_STATE_FILE])
def test_a_planted_pickle_as_precompute_state_is_refused_without_running(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    staged = tmp_path / "staged.pt"  # torch.load reads a *.safetensors name as safetensors
    torch.save({"fingerprint": Planted(marker), "cursor": 1, "streams": []}, staged)
    torch.load(staged, weights_only=False)
    assert marker.exists(), "the plant must be live, or the test proves nothing"
    marker.unlink()
    staged.rename(tmp_path / name)

    model, dicts, tokens, docs = _inputs()
    with pytest.raises(ConfigError, match="to start precompute over") as info:
        run_precompute(model, dicts, tokens, docs, CFG, work_dir=tmp_path)
    assert str(tmp_path / name) in str(info.value)
    assert not marker.exists(), "nothing in the planted file ran"
    assert (tmp_path / name).exists(), "a refused state is left in place"


def test_a_state_written_for_other_inputs_is_ignored_and_replaced(tmp_path: Path) -> None:
    model, dicts, tokens, docs = _inputs()

    def stop(i: int) -> None:
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_precompute(model, dicts, tokens, docs, CFG, work_dir=tmp_path, on_batch=stop)
    result = run_precompute(model, dicts, tokens[:8], docs[:8], CFG, work_dir=tmp_path)
    assert result.resumed_from_batch == 0 and not (tmp_path / STATE_FILE).exists()
