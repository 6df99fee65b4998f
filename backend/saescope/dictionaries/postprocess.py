"""Post-processing of trained dictionaries (OpenMOSS 2024): pruning and decoder fine-tuning.

Owns (1) per-feature statistics over activation batches (max activation, firing density, decoder
norm), the pruning rule (max activation < 1, decoder norm < 0.99, density < 1e-6, thresholds
configurable) returning a pruned mask, and producing the pruned dictionary (features disabled in
place so indices stay stable, or removed); (2) fighting feature suppression: with the encoder frozen,
fine-tune the decoder (unit-norm rows), decoder bias and a per-feature activation scale on MSE only,
then fold the scale into the weights; with reconstruction metrics before and after. It works on
activation matrices/batches only (no language model) and never writes to the atlas.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from saescope.atomic_files import write_json
from saescope.dictionaries.base import Dictionary
from saescope.errors import ConfigError, InputError

PRUNING_FILE = "pruning.json"


# ---------------------------------------------------------------------------------------------
# statistics and reconstruction metrics on activation matrices
# ---------------------------------------------------------------------------------------------
class FeatureStatistics(BaseModel):
    """Per-feature statistics over a set of activation rows."""

    n_tokens: int = Field(description="Rows seen.")
    max_activation: list[float] = Field(description="Largest activation of each feature.")
    density: list[float] = Field(description="Fraction of rows on which each feature is > 0.")
    decoder_norm: list[float] = Field(description="L2 norm of each decoder row.")


class ReconstructionMetrics(BaseModel):
    """Reconstruction quality on activation rows (no model involved)."""

    n_tokens: int = Field(description="Rows evaluated.")
    mse: float = Field(description="Mean squared error per element.")
    explained_variance: float | None = Field(description="1 - SSE/SST, SST around the per-dimension mean.")
    norm_ratio: float = Field(description="Mean ||x_hat|| / ||x|| over non-zero rows (< 1 = feature suppression).")
    l0: float = Field(description="Mean non-zero features per row (||f||_0).")


def _iter_rows(activations: Tensor | Iterable[Tensor], batch_size: int = 4096) -> Iterable[Tensor]:
    if isinstance(activations, Tensor):
        if activations.ndim != 2:
            raise InputError(f"activations must be [n, d_in]; got {tuple(activations.shape)}", field="activations")
        for start in range(0, activations.shape[0], batch_size):
            yield activations[start : start + batch_size]
    else:
        yield from activations


@torch.no_grad()
def feature_statistics(dictionary: Dictionary, activations: Tensor | Iterable[Tensor]) -> FeatureStatistics:
    """Max activation, density and decoder norm per feature over `activations` ([n, d_in] or batches)."""
    device = dictionary.device
    max_act = torch.full((dictionary.d_sae,), -math.inf, dtype=torch.float64)
    counts = torch.zeros(dictionary.d_sae, dtype=torch.float64)
    n = 0
    for batch in _iter_rows(activations):
        f = dictionary.encode(batch.to(device).float()).cpu()
        max_act = torch.maximum(max_act, f.max(0).values.double())
        counts += (f > 0).sum(0).double()
        n += batch.shape[0]
    if n == 0:
        raise InputError("no activation rows given", field="activations")
    return FeatureStatistics(
        n_tokens=n,
        max_activation=max_act.clamp_min(0).tolist(),
        density=(counts / n).tolist(),
        decoder_norm=dictionary.W_dec.detach().norm(dim=1).cpu().double().tolist(),
    )


@torch.no_grad()
def reconstruction_metrics(dictionary: Dictionary, activations: Tensor | Iterable[Tensor]) -> ReconstructionMetrics:
    """MSE, explained variance (against the mean), norm ratio and L0 on activation rows."""
    device = dictionary.device
    n, n_ratio, sse, ratio, l0 = 0, 0, 0.0, 0.0, 0.0
    sum_x: Tensor | None = None
    sum_x2: Tensor | None = None
    for batch in _iter_rows(activations):
        x = batch.to(device).float()
        f = dictionary.encode(x)
        x_hat = dictionary.decode(f)
        x64, xh64 = x.double().cpu(), x_hat.double().cpu()
        sum_x = x64.sum(0) if sum_x is None else sum_x + x64.sum(0)
        sum_x2 = (x64**2).sum(0) if sum_x2 is None else sum_x2 + (x64**2).sum(0)
        sse += float(((x64 - xh64) ** 2).sum())
        x_norm = x64.norm(dim=-1)
        nonzero = x_norm > 1e-8  # all-zero rows have no defined ratio
        ratio += float((xh64.norm(dim=-1)[nonzero] / x_norm[nonzero]).sum())
        n_ratio += int(nonzero.sum())
        l0 += float((f != 0).sum())
        n += x.shape[0]
    if n == 0 or sum_x is None or sum_x2 is None:
        raise InputError("no activation rows given", field="activations")
    sst = float((sum_x2 - sum_x**2 / n).sum())
    return ReconstructionMetrics(
        n_tokens=n,
        mse=sse / (n * sum_x.shape[0]),
        explained_variance=1 - sse / sst if sst > 0 else None,
        norm_ratio=ratio / max(n_ratio, 1),
        l0=l0 / n,
    )


# ---------------------------------------------------------------------------------------------
# pruning
# ---------------------------------------------------------------------------------------------
class PruneConfig(BaseModel):
    """Thresholds below which a feature is pruned (OpenMOSS defaults)."""

    min_max_activation: float = Field(1.0, description="Prune features whose max activation is below this.")
    min_decoder_norm: float = Field(0.99, description="Prune features whose decoder row norm is below this.")
    min_density: float = Field(1e-6, description="Prune features firing on a smaller fraction of tokens.")


class PruneResult(BaseModel):
    """Which features are pruned and why (a feature may fail several tests)."""

    config: PruneConfig = Field(description="Thresholds used.")
    pruned: list[bool] = Field(description="Per feature: True when pruned.")
    n_pruned: int = Field(description="Number of pruned features.")
    n_low_max_activation: int = Field(description="Features below min_max_activation.")
    n_low_decoder_norm: int = Field(description="Features below min_decoder_norm.")
    n_low_density: int = Field(description="Features below min_density.")

    @property
    def mask(self) -> Tensor:
        """`[d_sae]` bool, True = pruned."""
        return torch.tensor(self.pruned, dtype=torch.bool)


def prune_mask(stats: FeatureStatistics, config: PruneConfig | None = None) -> PruneResult:
    """Apply the pruning rule to `stats`."""
    config = config or PruneConfig()
    max_act = torch.tensor(stats.max_activation)
    norm = torch.tensor(stats.decoder_norm)
    density = torch.tensor(stats.density)
    low_act = max_act < config.min_max_activation
    low_norm = norm < config.min_decoder_norm
    low_density = density < config.min_density
    mask = low_act | low_norm | low_density
    return PruneResult(
        config=config,
        pruned=mask.tolist(),
        n_pruned=int(mask.sum()),
        n_low_max_activation=int(low_act.sum()),
        n_low_decoder_norm=int(low_norm.sum()),
        n_low_density=int(low_density.sum()),
    )


def save_prune_result(result: PruneResult, folder: Path) -> Path:
    """Write `pruning.json` into a dictionary folder (atomically)."""
    path = Path(folder) / PRUNING_FILE
    write_json(path, result.model_dump(mode="json"), indent=None)
    return path


def load_prune_result(folder: Path) -> PruneResult | None:
    """`pruning.json` of a dictionary folder, or None when it was never pruned."""
    path = Path(folder) / PRUNING_FILE
    return PruneResult.model_validate_json(path.read_text()) if path.is_file() else None


_DISABLED_BIAS = -1e4


@torch.no_grad()
def apply_prune_mask(dictionary: Dictionary, mask: Tensor, remove: bool = False) -> Dictionary:
    """A pruned copy of `dictionary` (`mask [d_sae]` True = pruned).

    remove=False (default): indices stay stable; pruned features never fire (encoder column 0,
    encoder bias very negative) and write nothing (decoder row 0). remove=True: a smaller dictionary
    with only the kept features (d_sae shrinks; TopK k is capped at the new d_sae).
    """
    mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
    if mask.shape != (dictionary.d_sae,):
        raise InputError(f"prune mask must have shape [{dictionary.d_sae}], got {tuple(mask.shape)}", field="mask")
    pruned = copy.deepcopy(dictionary)
    if not hasattr(pruned, "W_enc") or not hasattr(pruned, "b_enc"):
        raise ConfigError(f"{type(dictionary).__name__} has no encoder weights to prune")
    dev = pruned.W_dec.device
    m = mask.to(dev)
    if not remove:
        pruned.W_enc[:, m] = 0
        pruned.b_enc[m] = _DISABLED_BIAS
        pruned.W_dec[m] = 0
        return pruned
    keep = (~mask).nonzero().squeeze(1).to(dev)
    if keep.numel() == 0:
        raise ConfigError("the prune mask removes every feature; relax the thresholds")
    d_sae = dictionary.d_sae
    for name, param in list(pruned.named_parameters(recurse=False)):
        if name == "W_enc":
            new = param.data[:, keep]
        elif name != "b_dec" and param.ndim >= 1 and param.shape[0] == d_sae:
            new = param.data[keep]
        else:
            continue
        setattr(pruned, name, nn.Parameter(new.clone(), requires_grad=param.requires_grad))
    pruned.d_sae = int(keep.numel())
    if hasattr(pruned, "k") and isinstance(pruned.k, int):
        pruned.k = min(pruned.k, pruned.d_sae)
    return pruned


def prune_dictionary(
    dictionary: Dictionary,
    activations: Tensor | Iterable[Tensor],
    config: PruneConfig | None = None,
    remove: bool = False,
) -> tuple[Dictionary, PruneResult]:
    """Statistics over `activations`, the pruning rule, and the pruned copy in one call."""
    result = prune_mask(feature_statistics(dictionary, activations), config)
    return apply_prune_mask(dictionary, result.mask, remove=remove), result


# ---------------------------------------------------------------------------------------------
# decoder + scale fine-tuning against feature suppression
# ---------------------------------------------------------------------------------------------
class FinetuneConfig(BaseModel):
    """Decoder fine-tuning (MSE only, encoder frozen)."""

    lr: float = Field(1e-3, description="Adam learning rate.")
    epochs: int = Field(1, ge=1, description="Passes over the activation matrix.")
    batch_size: int = Field(4096, ge=1, description="Rows per step.")
    seed: int = Field(0, description="Seed of the row shuffling.")
    fold_scale_into: Literal["auto", "encoder", "decoder"] = Field(
        "auto",
        description="Where the learned per-feature scale goes: the encoder (activations grow, decoder "
        "rows stay unit norm; not for TopK) or the decoder rows. auto = encoder unless TopK.",
    )


class FinetuneResult(BaseModel):
    """Before/after reconstruction metrics and the loss curve."""

    model_config = {"arbitrary_types_allowed": True}

    before: ReconstructionMetrics = Field(description="Metrics of the input dictionary.")
    after: ReconstructionMetrics = Field(description="Metrics of the fine-tuned dictionary.")
    losses: list[float] = Field(description="MSE per step.")
    steps: int = Field(description="Optimiser steps taken.")
    scale: list[float] = Field(description="Learned per-feature activation scale (folded in).")


def _frozen_encoder(dictionary: Dictionary) -> Dictionary:
    """Copy whose encoder no longer reads b_dec (so b_dec can be trained without moving f)."""
    d = copy.deepcopy(dictionary)
    if getattr(d, "rescale_acts_by_decoder_norm", False):
        d.fold_decoder_norms()  # type: ignore[operator]  # TopK: selection must not read W_dec
    if getattr(d, "apply_b_dec_to_input", False):
        with torch.no_grad():
            d.b_enc.sub_(d.b_dec @ d.W_enc)  # type: ignore[operator,union-attr]
        d.apply_b_dec_to_input = False  # type: ignore[attr-defined]
    return d


def finetune_decoder(
    dictionary: Dictionary,
    activations: Tensor,
    config: FinetuneConfig | None = None,
    eval_activations: Tensor | None = None,
) -> tuple[Dictionary, FinetuneResult]:
    """Fine-tune decoder directions (unit norm), decoder bias and a per-feature scale on MSE with
    the encoder frozen; returns the new dictionary (same encodings up to the folded scale) and
    before/after metrics on `eval_activations` (default: `activations`)."""
    config = config or FinetuneConfig()
    if activations.ndim != 2 or activations.shape[1] != dictionary.d_in:
        raise InputError(f"activations must be [n, {dictionary.d_in}]; got {tuple(activations.shape)}", field="activations")
    eval_x = eval_activations if eval_activations is not None else activations
    before = reconstruction_metrics(dictionary, eval_x)
    tuned = _frozen_encoder(dictionary)
    device = tuned.device
    for p in tuned.parameters():
        p.requires_grad_(False)
    W_dec0 = tuned.W_dec.detach()
    norms0 = W_dec0.norm(dim=1, keepdim=True).clamp_min(1e-8)
    direction = nn.Parameter(W_dec0 / norms0)  # [d_sae, d_in]
    log_scale = nn.Parameter(norms0.squeeze(1).log().clone())  # [d_sae]; scale * unit row = W_dec
    b_dec = nn.Parameter(tuned.b_dec.detach().clone())
    optimiser = torch.optim.Adam([direction, log_scale, b_dec], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    n = activations.shape[0]
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            x = activations[order[start : start + config.batch_size]].to(device).float()
            with torch.no_grad():
                f = tuned.encode(x)  # frozen encoder
            unit = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
            x_hat = (f * log_scale.exp()) @ unit + b_dec
            loss = ((x_hat - x) ** 2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
    with torch.no_grad():
        unit = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
        scale = log_scale.exp()
        target = config.fold_scale_into
        if target == "auto":
            target = "decoder" if getattr(tuned, "architecture", "") == "topk" else "encoder"
        if target == "encoder" and getattr(tuned, "architecture", "") == "topk":
            raise ConfigError("folding the scale into a TopK encoder changes which features win; use decoder")
        if target == "encoder":
            tuned.W_enc.mul_(scale[None, :])  # type: ignore[union-attr]
            tuned.b_enc.mul_(scale)  # type: ignore[union-attr]
            if hasattr(tuned, "threshold"):
                tuned.threshold.mul_(scale)  # type: ignore[union-attr,operator]
            tuned.W_dec.copy_(unit)
        else:
            tuned.W_dec.copy_(unit * scale[:, None])
        tuned.b_dec.copy_(b_dec)
    for p in tuned.parameters():
        p.requires_grad_(True)
    after = reconstruction_metrics(tuned, eval_x)
    return tuned, FinetuneResult(
        before=before, after=after, losses=losses, steps=len(losses), scale=scale.cpu().tolist()
    )
