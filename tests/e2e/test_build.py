"""`saescope build` end to end on a user's own model and text: a tiny Hugging Face Llama folder and a
GPT-2 folder (random weights) and a tiny GGUF file, a folder of text files, several hook points,
trained and imported SAEs, every baseline kind; the model runs once over the training text (the
activation cache) and live inference on the served atlas equals the stored examples."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from saescope.cli import main
from saescope.errors import ConfigError

pytestmark = pytest.mark.slow

RESID = "blocks.0.hook_resid_post"
MLP = "blocks.1.mlp.hook_post"
WORDS = ("river stone garden window market letter silver morning travel number music story paper "
         "village winter bridge forest harbour candle orange").split()


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of English-like .txt and .md documents (deterministic)."""
    import random

    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(60):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                     for _ in range(30)]
        (root / f"doc{i:02d}.{'md' if i % 3 == 0 else 'txt'}").write_text(" ".join(sentences) + "\n")
    return root


def _tiny_options() -> list[str]:
    return ["--tokens", "6000", "--context-length", "32", "--device", "cpu"]


def _tiny_config_file(tmp_path: Path, model: Path, corpus: Path, extra: str = "") -> Path:
    path = tmp_path / "atlas.toml"
    path.write_text(f"""
seed = 0
sae_tokens = 6000
sae_batch_size = 256
sae_shuffle_buffer_tokens = 2048
baseline_fit_tokens = 1024
eval_contexts = 4
precompute_contexts = 64
device = "cpu"
baselines = []

[model]
location = "{model}"

[corpus]
source = "{corpus}"
context_length = 32

[[saes]]
architecture = "topk"
d_sae = 48
k = 4

[precompute]
top_k = 4
n_intervals = 2
examples_per_interval = 2
n_random = 2
umap = false
{extra}
""")
    return path


@pytest.fixture(scope="module")
def llama_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_llama_folder: Path, text_folder: Path) -> Path:
    """An atlas of the tiny Llama on the text folder: two hooks, the flag form of `build`."""
    root = tmp_path_factory.mktemp("llama_atlas") / "atlas"
    rc = main(["build", "--model", str(tiny_llama_folder), "--corpus", str(text_folder), "--hook", RESID,
               "--hook", MLP, "--architecture", "topk", "--d-sae", "48", "--k", "4",
               "--baselines", "pca,pca-relu,sae-nobias", "--atlas", str(root), *_tiny_options()])
    assert rc == 0
    return root


def _stored_dictionaries(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "atlas.db") as conn:
        return dict(conn.execute("select id, hook_name from dictionaries where status = 'ready'").fetchall())


def test_flag_build_of_a_local_hf_folder_publishes_every_dictionary_at_every_hook(llama_atlas: Path) -> None:
    stored = _stored_dictionaries(llama_atlas)
    assert stored == {
        "L0R-topk-48": RESID, "L0R-pca": RESID, "L0R-pca-relu": RESID, "L0R-topk-48-nobias": RESID,
        "L1M-topk-48": MLP, "L1M-pca": MLP, "L1M-pca-relu": MLP, "L1M-topk-48-nobias": MLP,
    }
    report = json.loads((llama_atlas / "build_report.json").read_text())
    assert report["model"]["heldout_loss"] > 0
    assert "activations" in report["seconds"]  # two hooks: the model ran once into the cache
    metrics = {d["id"]: d["metrics"] for d in report["dictionaries"]}
    assert metrics["L0R-topk-48"]["l0"] == pytest.approx(4, abs=0.01)
    assert metrics["L0R-pca"]["explained_variance"] > 0.99  # all components: exact reconstruction
    assert report["corpus"]["train_n_documents"] + report["corpus"]["heldout_n_documents"] == 60


def test_a_second_build_reuses_everything(llama_atlas: Path, tiny_llama_folder: Path, text_folder: Path, capsys) -> None:
    rc = main(["build", "--model", str(tiny_llama_folder), "--corpus", str(text_folder), "--hook", RESID,
               "--hook", MLP, "--architecture", "topk", "--d-sae", "48", "--k", "4",
               "--baselines", "pca,pca-relu,sae-nobias", "--atlas", str(llama_atlas), *_tiny_options()])
    assert rc == 0
    out = capsys.readouterr().out
    assert "feature records: reused" in out and out.count("[reused]") == 8


@pytest.fixture(scope="module")
def llama_client(llama_atlas: Path) -> Iterator:
    from fastapi.testclient import TestClient

    from saescope.api.app import ApiSettings, create_app

    with TestClient(create_app(ApiSettings(store_url=f"sqlite:///{llama_atlas / 'atlas.db'}", atlas_root=llama_atlas,
                                           device="cpu"))) as c:
        yield c


@pytest.mark.parametrize("dictionary", ["L0R-topk-48", "L1M-topk-48"])
def test_live_inference_equals_the_stored_examples(llama_client, dictionary: str) -> None:
    page = llama_client.get(f"/api/v1/dictionaries/{dictionary}/features",
                            params={"sort": "max_activation", "order": "desc", "limit": 6}).json()
    checked = 0
    for item in page["items"]:
        example = llama_client.get(f"/api/v1/dictionaries/{dictionary}/features/{item['index']}/examples",
                                   params={"group": "top"}).json()[0]
        live = llama_client.post("/api/v1/inference/feature", json={
            "token_ids": example["token_ids"], "dictionary": dictionary, "index": item["index"]})
        if live.status_code == 422:  # the endpoint takes text only: round-trip through the tokenizer
            text = "".join(example["tokens"][1:])
            live = llama_client.post("/api/v1/inference/feature",
                                     json={"text": text, "dictionary": dictionary, "index": item["index"]})
        body = live.json()
        if body["token_ids"] != example["token_ids"]:
            continue  # a window cut mid-word may re-tokenise differently
        assert body["activations"] == pytest.approx(example["activations"], abs=1e-3)
        checked += 1
    assert checked >= 2


def test_config_file_build_of_gpt2_with_an_imported_sae_folder(
    tmp_path: Path, tiny_gpt2_folder: Path, text_folder: Path, llama_atlas: Path
) -> None:
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.saelens_format import save_dictionary

    import torch

    torch.manual_seed(0)
    imported = tmp_path / "my-sae"
    sae = StandardSAE(64, 40, metadata=DictionaryMetadata(model_name="gpt2-tiny", hook_name="blocks.1.hook_resid_post"))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T)
    save_dictionary(sae, imported)
    config = _tiny_config_file(tmp_path, tiny_gpt2_folder, text_folder,
                               extra=f'\n[[hooks]]\nname = "{RESID}"\n')
    text = config.read_text().replace('baselines = []', f'baselines = ["random"]\nsae_folders = ["{imported}"]')
    config.write_text(text)
    root = tmp_path / "atlas"
    assert main(["build", str(config), "--atlas", str(root)]) == 0
    stored = _stored_dictionaries(root)
    assert stored == {"topk-48": RESID, "random": RESID, "my-sae": "blocks.1.hook_resid_post"}
    assert (root / "dictionaries" / "my-sae" / "metrics.json").is_file()


def test_a_gguf_file_builds_like_its_hf_folder(tmp_path: Path, tiny_gguf_file: Path, text_folder: Path) -> None:
    root = tmp_path / "atlas"
    assert main(["build", "--model", str(tiny_gguf_file), "--corpus", str(text_folder), "--hook", RESID,
                 "--architecture", "relu", "--d-sae", "32", "--atlas", str(root), *_tiny_options()]) == 0
    assert _stored_dictionaries(root) == {"relu-32": RESID}


def test_a_yaml_config_with_a_bad_field_names_it_and_builds_nothing(tmp_path: Path, tiny_llama_folder: Path,
                                                                     capsys) -> None:
    path = tmp_path / "atlas.yaml"
    path.write_text(f"model:\n  location: {tiny_llama_folder}\nhooks: [{RESID}]\nsae_tokens: -5\nsaes:\n"
                    "  - architecture: nonsense\n    d_sae: 8\n")
    root = tmp_path / "atlas"
    assert main(["build", str(path), "--atlas", str(root)]) != 0
    err = capsys.readouterr().err
    assert "sae_tokens" in err and "architecture" in err
    assert not root.exists()


def test_neurons_at_a_residual_hook_is_refused_before_anything_runs(tmp_path: Path, tiny_llama_folder: Path,
                                                                     text_folder: Path, capsys) -> None:
    root = tmp_path / "atlas"
    rc = main(["build", "--model", str(tiny_llama_folder), "--corpus", str(text_folder), "--hook", RESID,
               "--baselines", "neurons", "--atlas", str(root), *_tiny_options()])
    assert rc != 0 and "neuron basis" in capsys.readouterr().err
    assert not root.exists()


def test_print_config_shows_the_resolved_config(tmp_path: Path, capsys) -> None:
    assert main(["build", "--preset", "builtin-tiny", "--hook", "blocks.0.hook_resid_post", "--print-config",
                 "--atlas", str(tmp_path / "a")]) == 0
    config = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in config["hooks"]] == ["blocks.0.hook_resid_post"]
    assert config["model"]["location"] == "builtin"


def test_config_errors_are_config_errors() -> None:
    from saescope.pipeline.build_config import load_build_config

    with pytest.raises(ConfigError, match="listed twice"):
        load_build_config(None, "builtin", {"hooks": ["a", "a"]})
    with pytest.raises(ConfigError, match="does not exist"):
        load_build_config("/nonexistent/atlas.toml")


def test_bfloat16_build_flags_massive_rows_and_records_them(tmp_path: Path, tiny_llama_folder: Path,
                                                            text_folder: Path) -> None:
    """--dtype reaches the model (bfloat16 forward; SAE statistics in float32) and --max-norm-ratio leaves
    massive-activation rows out of training, counted in the folder's notes and the store's provenance."""
    root = tmp_path / "atlas"
    assert main(["build", "--model", str(tiny_llama_folder), "--corpus", str(text_folder), "--hook", RESID,
                 "--architecture", "relu", "--d-sae", "32", "--dtype", "bfloat16", "--max-norm-ratio", "1.5",
                 "--atlas", str(root), *_tiny_options()]) == 0
    notes = json.loads((root / "dictionaries" / "relu-32" / "training.json").read_text())
    assert notes["max_norm_ratio"] == 1.5 and notes["massive_rows_excluded"] > 0
    report = json.loads((root / "build_report.json").read_text())
    assert report["model"]["dtype"] == "bfloat16"
    metrics = report["dictionaries"][0]["metrics"]
    assert all(np.isfinite(metrics[k]) for k in ("l0", "ce_clean", "ce_spliced"))
    with sqlite3.connect(root / "atlas.db") as conn:
        (provenance,) = conn.execute("select provenance from dictionaries where id = 'relu-32'").fetchone()
    assert json.loads(provenance)["massive_rows_excluded"] == notes["massive_rows_excluded"]


def test_two_ranks_train_the_same_saes_as_one_process(tmp_path: Path, tiny_llama_folder: Path,
                                                      text_folder: Path) -> None:
    from safetensors.torch import load_file

    import torch

    weights = {}
    for nproc in (1, 2):
        root = tmp_path / f"atlas{nproc}"
        assert main(["build", "--model", str(tiny_llama_folder), "--corpus", str(text_folder), "--hook", RESID,
                     "--architecture", "topk", "--d-sae", "32", "--k", "4", "--baselines", "", "--explainer", "none",
                     "--nproc", str(nproc), "--atlas", str(root), *_tiny_options()]) == 0
        weights[nproc] = load_file(root / "dictionaries" / "topk-32" / "sae_weights.safetensors")
    assert weights[1].keys() == weights[2].keys()
    for name in weights[1]:
        torch.testing.assert_close(weights[2][name], weights[1][name], atol=1e-5, rtol=1e-4)
