"""Evaluating a dictionary on held-out tokens: reconstruction, sparsity and downstream loss.

Owns `evaluate_dictionary` and the `DictionaryMetrics` it returns (written as `metrics.json` next to
a SAELens folder). Reconstruction metrics are computed on the activation rows a dictionary sees
(BOS column dropped): L0, explained variance *against the per-dimension mean* (1 - SSE/SST, the
SAELens pitfall is to measure it against zero), MSE, cosine(x, x_hat), norm ratio ||x_hat||/||x||
(feature suppression), firing densities (dead / dense features, log10 density histogram).
Downstream metrics splice the reconstruction into the model at the hook (transformer_lens hooks) and
compare next-token cross-entropy with the clean run, zero ablation and mean ablation of the hook,
plus KL(clean || spliced). Works for SAEs and baselines alike through the `Dictionary` interface.
It does not train, prune or store anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor

from saescope.atomic_files import write_json
from saescope.activations.hooks import flatten_hook_activation, hook_dimension, hook_layer, unflatten_into_hook
from saescope.activations.stream import as_token_tensor, check_tokens_fit_model, model_device
from saescope.dictionaries.base import Dictionary
from saescope.errors import ConfigError, FormatError, InputError

METRICS_FILE = "metrics.json"


class Histogram(BaseModel):
    """Counts per bin; `edges` has one more entry than `counts`."""

    edges: list[float] = Field(default_factory=list, description="Bin edges (len = len(counts) + 1).")
    counts: list[int] = Field(default_factory=list, description="Number of items per bin.")


class DictionaryMetrics(BaseModel):
    """Held-out evaluation of one dictionary at one hook point."""

    hook_name: str = Field(description="Hook point evaluated.")
    hook_head_index: int | None = Field(None, description="Head selected for per-head hooks.")
    n_contexts: int = Field(description="Number of held-out contexts evaluated.")
    n_tokens: int = Field(description="Activation rows used for reconstruction metrics (BOS excluded).")
    d_sae: int = Field(description="Number of features.")
    l0: float = Field(description="Mean number of non-zero features per token (||f||_0).")
    explained_variance: float | None = Field(
        description="1 - SSE/SST with SST the squared deviation from the per-dimension mean."
    )
    explained_variance_vs_zero: float | None = Field(
        description="1 - SSE/sum(x^2): the misleading 'against zero' variant, for comparison only."
    )
    mse: float = Field(description="Mean squared error per activation element.")
    cosine: float = Field(description="Mean cosine similarity between x and x_hat per token (non-zero x).")
    norm_ratio: float = Field(description="Mean ||x_hat|| / ||x|| per token over non-zero x (< 1 = feature suppression).")
    ce_clean: float = Field(description="Next-token cross-entropy of the unmodified model (nats).")
    ce_spliced: float = Field(description="Cross-entropy with the reconstruction spliced in at the hook.")
    ce_zero_ablation: float = Field(description="Cross-entropy with the hook activation set to zero.")
    ce_mean_ablation: float = Field(description="Cross-entropy with the hook set to its mean activation.")
    ce_recovered: float | None = Field(
        description="Reconstruction score (ce_zero_ablation - ce_spliced) / (ce_zero_ablation - ce_clean)."
    )
    ce_recovered_mean_ablation: float | None = Field(
        description="(ce_mean_ablation - ce_spliced) / (ce_mean_ablation - ce_clean)."
    )
    kl: float = Field(description="Mean per-token KL(clean || spliced) of the next-token distribution.")
    dead: int = Field(description="Features that never fire (activation > 0) on the evaluation tokens.")
    dense: int = Field(description="Features firing on more than `dense_threshold` of tokens.")
    dense_threshold: float = Field(0.1, description="Density above which a feature counts as dense.")
    mean_log10_density: float | None = Field(None, description="Mean log10 density over live features.")
    density_histogram: Histogram = Field(
        default_factory=Histogram, description="Histogram of log10 firing density of live features."
    )
    feature_density: list[float] | None = Field(
        None,
        exclude=True,
        description="Firing density per feature (not written to metrics.json; see log10_density()).",
    )

    def log10_density(self, floor: float = 1e-10) -> Tensor:
        """`[d_sae]` log10 firing density (SAELens sparsity.safetensors convention)."""
        if self.feature_density is None:
            raise InputError("these metrics carry no per-feature density (loaded from metrics.json)")
        return torch.tensor(self.feature_density, dtype=torch.float64).clamp_min(floor).log10().float()


def save_metrics(metrics: DictionaryMetrics, folder: Path) -> Path:
    """Write `metrics.json` (atomically) into `folder`; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METRICS_FILE
    write_json(path, metrics.model_dump(mode="json"))
    return path


def load_metrics(folder: Path) -> DictionaryMetrics:
    """Read `metrics.json` from a dictionary folder; FormatError names the path when it is bad."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        raise FormatError(f"{path} not found: run evaluation first")
    try:
        return DictionaryMetrics.model_validate_json(path.read_text())
    except ValueError as exc:
        raise FormatError(f"{path} is not a valid metrics file: {exc}") from exc


def density_histogram(density: np.ndarray, n_tokens: int, bins: int = 40) -> Histogram:
    """Histogram of log10 density of live features; lowest edge at log10(1/n_tokens) or lower."""
    live = density[density > 0]
    lo = math.floor(math.log10(1.0 / max(n_tokens, 1)))
    if live.size:
        lo = min(lo, math.floor(float(np.log10(live).min())))
    edges = np.linspace(lo, 0.0, bins + 1)
    counts, _ = np.histogram(np.log10(live) if live.size else np.array([]), bins=edges)
    return Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts])


class _Accumulator:
    """Running sums (float64) for reconstruction metrics over activation rows."""

    def __init__(self, d_in: int, d_sae: int) -> None:
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_x2 = torch.zeros(d_in, dtype=torch.float64)
        self.sse = 0.0
        self.l0 = 0.0
        self.cos = 0.0
        self.norm_ratio = 0.0
        self.n_ratio = 0
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64)

    def add(self, x: Tensor, f: Tensor, x_hat: Tensor) -> None:
        """x, x_hat: [n, d_in]; f: [n, d_sae]."""
        x64, xh64 = x.double().cpu(), x_hat.double().cpu()
        self.n += x.shape[0]
        self.sum_x += x64.sum(0)
        self.sum_x2 += (x64**2).sum(0)
        self.sse += float(((x64 - xh64) ** 2).sum())
        self.l0 += float((f != 0).sum())  # ||f||_0 (signed baselines count negative values too)
        active = (f > 0).cpu()  # "fires" = positive activation, as in the feature records
        self.fire_counts += active.sum(0).double()
        x_norm = x64.norm(dim=-1)
        xh_norm = xh64.norm(dim=-1)
        nonzero = x_norm > 1e-8  # all-zero rows have no defined ratio or cosine
        self.cos += float(F.cosine_similarity(x64, xh64, dim=-1, eps=1e-12)[nonzero].sum())
        self.norm_ratio += float((xh_norm[nonzero] / x_norm[nonzero]).sum())
        self.n_ratio += int(nonzero.sum())


def _loss_per_context(logits: Tensor, tokens: Tensor) -> Tensor:
    """Sum of next-token cross-entropy over positions, per context: [batch]."""
    logp = logits[:, :-1].float().log_softmax(-1)
    target = tokens[:, 1:]
    return -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)


def _nll_sum(logp: Tensor, tokens: Tensor) -> Tensor:
    """Summed next-token negative log-likelihood from log-probs `[b, pos-1, d_vocab]`."""
    return -logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).sum()


def _default_eval_batch(n_ctx: int, d_vocab: int) -> int:
    """About 4096 tokens per batch, fewer when one float32 logits tensor would exceed 256 MiB."""
    by_tokens = 4096 // max(n_ctx, 1)
    by_memory = (256 << 20) // (4 * max(n_ctx, 1) * max(d_vocab, 1))
    return max(1, min(by_tokens, by_memory))


class _Interventions:
    """Forwards of `model` with the activations at one hook point captured, replaced by the
    dictionary's reconstruction, zeroed or set to their mean, at positions `first:` only (the BOS
    activation stays clean). Interventions restart from the residual stream entering the hook's
    block (start_at_layer), so the blocks before it run once per batch instead of four times."""

    def __init__(self, model: Any, dictionary: Dictionary, hook_name: str, head: int | None, first: int) -> None:
        self.model, self.dictionary = model, dictionary
        self.hook_name, self.head, self.first = hook_name, head, first
        self.layer = hook_layer(hook_name)
        self.resid_name = f"blocks.{self.layer}.hook_resid_pre" if self.layer is not None else None
        self.mean_act: Tensor | None = None

    def _hook(self, mode: str, store: dict[str, Tensor]) -> Any:
        first, head = self.first, self.head

        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            flat = flatten_hook_activation(act, head)  # [b, pos, d]
            if mode == "capture":
                store["x"] = flat.detach().clone()
                return act
            new = flat.clone()
            region = new[:, first:, :]
            if mode == "spliced":
                f = self.dictionary.encode(region.reshape(-1, region.shape[-1]).float())
                x_hat = self.dictionary.decode(f)
                store["f"], store["x_hat"] = f, x_hat
                new[:, first:, :] = x_hat.reshape(region.shape).to(new.dtype)
            elif mode == "zero":
                new[:, first:, :] = 0
            else:  # mean
                assert self.mean_act is not None
                new[:, first:, :] = self.mean_act.to(new.dtype)
            return unflatten_into_hook(act, new, head)

        return hook_fn

    def clean(self, batch: Tensor, store: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Clean logits, capturing the hook's activations (and the block's input residual)."""
        hooks = [(self.hook_name, self._hook("capture", store))]
        if self.resid_name is not None:

            def keep_resid(act: Tensor, hook: Any) -> None:
                store["resid"] = act.detach()

            hooks.append((self.resid_name, keep_resid))
        logits = self.model.run_with_hooks(batch, fwd_hooks=hooks)
        return logits, store.get("resid")

    def run(self, batch: Tensor, resid: Tensor | None, mode: str, store: dict[str, Tensor]) -> Tensor:
        """Logits with the intervention `mode` (spliced, zero, mean)."""
        hooks = [(self.hook_name, self._hook(mode, store))]
        if resid is None:
            return self.model.run_with_hooks(batch, fwd_hooks=hooks)
        return self.model.run_with_hooks(resid, start_at_layer=self.layer, fwd_hooks=hooks)


def _checked_hook(model: Any, dictionary: Dictionary, hook_name: str | None, head: int | None) -> tuple[str, int | None]:
    """(hook name, head index) to evaluate at; ConfigError when the dictionary does not fit the hook."""
    hook_name = hook_name or dictionary.metadata.hook_name
    if not hook_name:
        raise ConfigError("no hook point: pass hook_name or set dictionary.metadata.hook_name")
    if head is None:
        head = dictionary.metadata.hook_head_index
    d_hook = hook_dimension(model, hook_name, head)  # validates the hook too
    if dictionary.d_in != d_hook:
        raise ConfigError(
            f"dictionary d_in={dictionary.d_in} does not match hook {hook_name!r} dimension {d_hook}; "
            "evaluate it at the hook it was trained on"
        )
    return hook_name, head


@torch.no_grad()
def evaluate_dictionary(
    model: Any,
    dictionary: Dictionary,
    tokens: Any,
    hook_name: str | None = None,
    batch_size: int | None = None,
    hook_head_index: int | None = None,
    include_bos: bool = False,
    dense_threshold: float = 0.1,
    histogram_bins: int = 40,
) -> DictionaryMetrics:
    """Evaluate `dictionary` at `hook_name` (default: its metadata's hook) on held-out `tokens`
    `[n_contexts, n_ctx]`, `batch_size` contexts at a time (default ~4096 tokens per batch).

    Reconstruction metrics use the same rows as training (BOS column dropped unless `include_bos`);
    the splice/ablations replace those positions only, so the BOS activation stays clean.
    """
    hook_name, hook_head_index = _checked_hook(model, dictionary, hook_name, hook_head_index)
    (metrics,) = evaluate_dictionaries(model, [dictionary], tokens, hook_name, batch_size, hook_head_index,
                                       include_bos, dense_threshold, histogram_bins)
    return metrics


@torch.no_grad()
def evaluate_dictionaries(
    model: Any,
    dictionaries: Sequence[Dictionary],
    tokens: Any,
    hook_name: str,
    batch_size: int | None = None,
    hook_head_index: int | None = None,
    include_bos: bool = False,
    dense_threshold: float = 0.1,
    histogram_bins: int = 40,
) -> list[DictionaryMetrics]:
    """`evaluate_dictionary` for several dictionaries of ONE hook point: the clean, zero-ablated and
    mean-ablated forwards do not depend on the dictionary, so they run once per batch for all of them
    and only the spliced forward runs per dictionary. Each result equals `evaluate_dictionary`'s."""
    if not dictionaries:
        return []
    heads = {_checked_hook(model, d, hook_name, hook_head_index)[1] for d in dictionaries}
    if len(heads) > 1:
        raise ConfigError(f"dictionaries evaluated together must read the same head of {hook_name}; got {sorted(heads, key=str)}")
    hook_head_index = heads.pop()
    device = model_device(model)
    all_tokens = as_token_tensor(tokens)
    check_tokens_fit_model(model, all_tokens)
    n_contexts, n_ctx = all_tokens.shape
    if n_contexts == 0 or n_ctx < 2:
        raise InputError("evaluation needs at least one context of >= 2 tokens", field="tokens")
    if batch_size is None:
        batch_size = _default_eval_batch(n_ctx, int(model.cfg.d_vocab))
    first = 0 if include_bos else 1
    was_training = [d.training for d in dictionaries]
    runs = []
    for d in dictionaries:
        d.to(device).eval()
        runs.append(_Interventions(model, d, hook_name, hook_head_index, first))
    shared = runs[0]
    accs = [_Accumulator(d.d_in, d.d_sae) for d in dictionaries]
    common = {"clean": 0.0, "zero": 0.0, "mean": 0.0}
    per = [{"spliced": 0.0, "kl": 0.0} for _ in dictionaries]
    n_pred = 0
    batches = [all_tokens[i : i + batch_size] for i in range(0, n_contexts, batch_size)]
    for batch in batches:
        batch = batch.to(device)
        store: dict[str, Tensor] = {}
        # One logits tensor alive at a time besides the clean log-probs (vocabularies can be large).
        clean_logits, resid = shared.clean(batch, store)
        logp_clean = clean_logits[:, :-1].float().log_softmax(-1)  # [b, pos-1, d_vocab]
        del clean_logits
        common["clean"] += float(_nll_sum(logp_clean, batch))
        x = store["x"][:, first:, :].reshape(-1, store["x"].shape[-1]).float()
        for run, acc, losses in zip(runs, accs, per):
            spliced: dict[str, Tensor] = {}
            logp_spliced = run.run(batch, resid, "spliced", spliced)[:, :-1].float().log_softmax(-1)
            losses["spliced"] += float(_nll_sum(logp_spliced, batch))
            losses["kl"] += float((logp_clean.exp() * (logp_clean - logp_spliced)).sum())
            del logp_spliced
            acc.add(x, spliced["f"], spliced["x_hat"])
        del logp_clean
        common["zero"] += float(_loss_per_context(shared.run(batch, resid, "zero", {}), batch).sum())
        n_pred += batch.shape[0] * (batch.shape[1] - 1)

    shared.mean_act = (accs[0].sum_x / accs[0].n).float().to(device)
    for batch in batches:
        batch = batch.to(device)
        common["mean"] += float(_loss_per_context(shared.run(batch, None, "mean", {}), batch).sum())
    out = []
    for d, acc, losses, training in zip(dictionaries, accs, per, was_training):
        d.train(training)
        totals = {**common, **losses}
        out.append(_metrics(acc, {k: v / n_pred for k, v in totals.items()}, hook_name, hook_head_index,
                            int(n_contexts), d.d_sae, dense_threshold, histogram_bins))
    return out


def _metrics(
    acc: _Accumulator, losses: dict[str, float], hook_name: str, hook_head_index: int | None, n_contexts: int,
    d_sae: int, dense_threshold: float, histogram_bins: int,
) -> DictionaryMetrics:
    """The metrics from the accumulated sums and the per-prediction losses."""
    n = acc.n
    mean = acc.sum_x / n
    sst = float((acc.sum_x2 - n * mean**2).sum())
    ss_zero = float(acc.sum_x2.sum())
    density = (acc.fire_counts / n).numpy()
    live = density[density > 0]
    return DictionaryMetrics(
        hook_name=hook_name,
        hook_head_index=hook_head_index,
        n_contexts=n_contexts,
        n_tokens=int(n),
        d_sae=int(d_sae),
        l0=acc.l0 / n,
        explained_variance=1.0 - acc.sse / sst if sst > 0 else None,
        explained_variance_vs_zero=1.0 - acc.sse / ss_zero if ss_zero > 0 else None,
        mse=acc.sse / (n * acc.sum_x.shape[0]),
        cosine=acc.cos / max(acc.n_ratio, 1),
        norm_ratio=acc.norm_ratio / max(acc.n_ratio, 1),
        ce_clean=losses["clean"],
        ce_spliced=losses["spliced"],
        ce_zero_ablation=losses["zero"],
        ce_mean_ablation=losses["mean"],
        ce_recovered=_score(losses["zero"], losses["spliced"], losses["clean"]),
        ce_recovered_mean_ablation=_score(losses["mean"], losses["spliced"], losses["clean"]),
        kl=losses["kl"],
        dead=int((density == 0).sum()),
        dense=int((density > dense_threshold).sum()),
        dense_threshold=dense_threshold,
        mean_log10_density=float(np.log10(live).mean()) if live.size else None,
        density_histogram=density_histogram(density, n, histogram_bins),
        feature_density=[float(v) for v in density],
    )


def _score(ablated: float, spliced: float, clean: float) -> float | None:
    """(ablated - spliced) / (ablated - clean); None when ablation does not change the loss."""
    denom = ablated - clean
    if abs(denom) < 1e-12:
        return None
    return (ablated - spliced) / denom
