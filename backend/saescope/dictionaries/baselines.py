"""Baseline dictionaries (Cunningham et al. 2023) behind the same `Dictionary` interface as SAEs.

Owns fitting the comparison dictionaries from an activation matrix `[n, d_in]`: the neuron basis
(identity), random unit directions, PCA (all components as decoder rows, encode = projection), ICA
(sklearn FastICA, fixed seed), each optionally with a proportional negative bias + ReLU (a feature
fires only when its centred projection exceeds `bias_scale` standard deviations), and "SAE without
encoder bias" (a copy of an SAE with `b_enc = 0`). Baselines encode as
`act((x - b_dec) @ W_enc + b_enc)` with act = identity or ReLU and decode linearly, so they are
evaluated, saved (SAELens folder, `metadata.saescope_kind`) and browsed exactly like SAEs. It does
not evaluate or store anything itself.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from saescope.dictionaries.base import Dictionary, DictionaryMetadata, metadata_from_cfg
from saescope.dictionaries.architectures.standard import StandardSAE
from saescope.errors import ConfigError, InputError

BaselineKind = Literal["neurons", "random", "pca", "ica", "sae"]
Activation = Literal["identity", "relu"]


class BaselineDictionary(StandardSAE):
    """A linear (or bias + ReLU) dictionary fitted without training.

    Parameters as StandardSAE: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in].
    `kind` is per instance (neurons | random | pca | ica); `activation` is identity or relu.
    """

    architecture = "standard"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        kind: str,
        activation: Activation = "identity",
        metadata: DictionaryMetadata | None = None,
        bias_scale: float = 0.0,
    ) -> None:
        super().__init__(d_in, d_sae, metadata, apply_b_dec_to_input=True)
        if kind not in ("neurons", "random", "pca", "ica"):
            raise ConfigError(f"unknown baseline kind {kind!r}: use neurons, random, pca or ica")
        if activation not in ("identity", "relu"):
            raise ConfigError(f"unknown baseline activation {activation!r}: use identity or relu")
        self.kind = kind  # type: ignore[assignment]
        self.activation = activation
        self.bias_scale = float(bias_scale)

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_activations(x)
        return torch.relu(pre) if self.activation == "relu" else pre

    def hyperparameters(self) -> dict[str, Any]:
        return {"activation": self.activation, "bias_scale": self.bias_scale}

    def format_metadata(self) -> dict[str, Any]:
        """Extra `metadata` entries for cfg.json (read back by `from_config`)."""
        return {
            "saescope_kind": self.kind,
            "saescope_activation": self.activation,
            "saescope_bias_scale": self.bias_scale,
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "BaselineDictionary":
        meta = cfg.get("metadata") or {}
        return cls(
            int(cfg["d_in"]),
            int(cfg["d_sae"]),
            kind=meta.get("saescope_kind", "neurons"),
            activation=meta.get("saescope_activation", cfg.get("activation", "identity")),
            metadata=metadata_from_cfg(cfg),
            bias_scale=float(meta.get("saescope_bias_scale", cfg.get("bias_scale", 0.0))),
        )


def _as_matrix(activations: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(np.asarray(activations)) if not isinstance(activations, Tensor) else activations
    x = x.detach().cpu().double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"baselines are fitted on an activation matrix [n >= 2, d_in]; got {tuple(x.shape)}", field="activations")
    return x


def _build(
    kind: str,
    W_enc: Tensor,  # [d_in, d_sae]
    W_dec: Tensor,  # [d_sae, d_in]
    b_dec: Tensor,  # [d_in]
    x: Tensor,  # [n, d_in] fit data (float64)
    relu: bool,
    bias_scale: float,
    metadata: DictionaryMetadata | None,
) -> BaselineDictionary:
    d_in, d_sae = W_enc.shape
    b_enc = torch.zeros(d_sae, dtype=torch.float64)
    if relu:
        proj = (x - b_dec) @ W_enc  # [n, d_sae]
        b_enc = -bias_scale * proj.std(dim=0)
    d = BaselineDictionary(d_in, d_sae, kind, "relu" if relu else "identity", metadata, bias_scale if relu else 0.0)
    with torch.no_grad():
        d.W_enc.copy_(W_enc.float())
        d.W_dec.copy_(W_dec.float())
        d.b_dec.copy_(b_dec.float())
        d.b_enc.copy_(b_enc.float())
    return d.eval()


def fit_neuron_basis(
    activations: Tensor | np.ndarray,
    relu: bool = False,
    bias_scale: float = 1.0,
    metadata: DictionaryMetadata | None = None,
) -> BaselineDictionary:
    """Identity dictionary: feature i = neuron i. Without ReLU, encode(x) = x (exact reconstruction);
    with ReLU, inputs are centred on the fit mean and neuron i fires above `bias_scale` std."""
    x = _as_matrix(activations)
    d_in = x.shape[1]
    eye = torch.eye(d_in, dtype=torch.float64)
    b_dec = x.mean(0) if relu else torch.zeros(d_in, dtype=torch.float64)
    return _build("neurons", eye, eye, b_dec, x, relu, bias_scale, metadata)


def fit_random_directions(
    activations: Tensor | np.ndarray,
    d_sae: int | None = None,
    seed: int = 0,
    relu: bool = False,
    bias_scale: float = 1.0,
    metadata: DictionaryMetadata | None = None,
) -> BaselineDictionary:
    """`d_sae` (default d_in) random unit directions as decoder rows; encode = projection of the
    centred input onto each direction (W_enc = W_dec^T)."""
    x = _as_matrix(activations)
    d_in = x.shape[1]
    d_sae = d_sae or d_in
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d_sae, d_in, generator=g, dtype=torch.float64)
    w /= w.norm(dim=1, keepdim=True)
    return _build("random", w.T.contiguous(), w, x.mean(0), x, relu, bias_scale, metadata)


def fit_pca(
    activations: Tensor | np.ndarray,
    d_sae: int | None = None,
    relu: bool = False,
    bias_scale: float = 1.0,
    metadata: DictionaryMetadata | None = None,
) -> BaselineDictionary:
    """Principal components (by decreasing variance) as unit decoder rows; encode = projection of
    the centred input. With all d_in components (default) and no ReLU, reconstruction is exact."""
    x = _as_matrix(activations)
    d_in = x.shape[1]
    d_sae = d_sae or d_in
    if d_sae > d_in:
        raise ConfigError(f"PCA has at most d_in={d_in} components; got d_sae={d_sae}")
    mean = x.mean(0)
    # Eigenvectors of the [d_in, d_in] covariance (float64): memory independent of the row count
    # (an SVD of the [n, d_in] matrix with full_matrices would build an [n, n] U).
    centred = (x - mean).double()
    covariance = centred.T @ centred / max(1, x.shape[0] - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    order = torch.argsort(eigenvalues, descending=True)
    comps = eigenvectors[:, order].T[:d_sae].to(x.dtype).contiguous()  # [d_sae, d_in]
    # Deterministic sign: the largest-magnitude entry of each component is positive.
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True))).squeeze(1)
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    return _build("pca", comps.T.contiguous(), comps, mean, x, relu, bias_scale, metadata)


def fit_ica(
    activations: Tensor | np.ndarray,
    d_sae: int | None = None,
    seed: int = 0,
    relu: bool = False,
    bias_scale: float = 1.0,
    metadata: DictionaryMetadata | None = None,
    max_iter: int = 400,
) -> BaselineDictionary:
    """Independent components (sklearn FastICA, `random_state=seed`). Decoder rows = mixing columns
    rescaled to unit norm (the source scale moves into the encoder), encode = unmixing of the
    centred input; with all components and no ReLU, reconstruction is exact."""
    import warnings

    from sklearn.decomposition import FastICA
    from sklearn.exceptions import ConvergenceWarning

    x = _as_matrix(activations)
    d_in = x.shape[1]
    d_sae = d_sae or d_in
    if d_sae > d_in:
        raise ConfigError(f"ICA has at most d_in={d_in} components; got d_sae={d_sae}")
    ica = FastICA(n_components=d_sae, random_state=seed, whiten="unit-variance", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ica.fit(x.numpy())
    unmixing = torch.from_numpy(ica.components_).double()  # [d_sae, d_in]
    mixing = torch.from_numpy(ica.mixing_).double().T  # [d_sae, d_in]
    norms = mixing.norm(dim=1).clamp_min(1e-12)
    W_dec = mixing / norms[:, None]
    W_enc = (unmixing * norms[:, None]).T.contiguous()  # [d_in, d_sae]
    mean = torch.from_numpy(ica.mean_).double()
    return _build("ica", W_enc, W_dec, mean, x, relu, bias_scale, metadata)


def sae_without_encoder_bias(sae: Dictionary) -> Dictionary:
    """A copy of `sae` with `b_enc = 0` (the Cunningham et al. control); kind stays "sae" and
    `metadata.saescope_variant` records "no_encoder_bias"."""
    if not hasattr(sae, "b_enc"):
        raise ConfigError(f"{type(sae).__name__} has no encoder bias to remove")
    clone = copy.deepcopy(sae)
    with torch.no_grad():
        clone.b_enc.zero_()  # type: ignore[union-attr]
    meta = clone.metadata.model_dump()
    meta["saescope_variant"] = "no_encoder_bias"
    clone.metadata = DictionaryMetadata(**meta)
    return clone


def fit_baseline(
    kind: BaselineKind,
    activations: Tensor | np.ndarray | None = None,
    d_sae: int | None = None,
    relu: bool = False,
    bias_scale: float = 1.0,
    seed: int = 0,
    metadata: DictionaryMetadata | None = None,
    sae: Dictionary | None = None,
) -> Dictionary:
    """One entry point: kind = neurons | random | pca | ica (fitted on `activations [n, d_in]`)
    or sae (= `sae` without its encoder bias)."""
    if kind == "sae":
        if sae is None:
            raise ConfigError("baseline kind 'sae' (SAE without encoder bias) needs the trained sae")
        return sae_without_encoder_bias(sae)
    if activations is None:
        raise ConfigError(f"baseline kind {kind!r} needs an activation matrix [n, d_in]")
    if kind == "neurons":
        return fit_neuron_basis(activations, relu, bias_scale, metadata)
    if kind == "random":
        return fit_random_directions(activations, d_sae, seed, relu, bias_scale, metadata)
    if kind == "pca":
        return fit_pca(activations, d_sae, relu, bias_scale, metadata)
    if kind == "ica":
        return fit_ica(activations, d_sae, seed, relu, bias_scale, metadata)
    raise ConfigError(f"unknown baseline kind {kind!r}: use neurons, random, pca, ica or sae")
