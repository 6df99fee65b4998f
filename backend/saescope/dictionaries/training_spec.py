"""The contract between the SAE trainer and an SAE architecture.

Owns `TrainingSpec` (what one architecture tells the trainer: its options, its parameters, its
loss as a plain autograd computation, an optional accelerated step, what it does after a step, and
how its training parameters become an inference `Dictionary`), the shared training parameter
container `SAEParameters`, and `StepContext` / `StepStats`, the values that cross between them.
An architecture module (`dictionaries/architectures/<name>.py`) subclasses `TrainingSpec`; the
trainer (`training.py`) only ever calls these methods and knows no architecture by name. It must
not import the trainer or any architecture.

Parameter layout (float32, one row per latent where it applies): `W_encT [d_sae, d_in]` (the
SAELens W_enc transposed), `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`, plus the
architecture's own per-latent vectors (e.g. `threshold [d_sae]`). Loss convention: squared error
summed over d_in, averaged over the batch (SAELens, Anthropic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.errors import ConfigError

# Sparsity-coefficient defaults, in the units of the loss (squared error summed over d_in on inputs
# normalised to norm sqrt(d_in)). A latent carrying a share 1/L0 of the norm has an activation
# ~ sqrt(d_in / L0): an L1 coefficient proportional to sqrt(d_in), and an L0 coefficient
# proportional to d_in, keep the same sparsity across widths.
DEFAULT_L1_PER_SQRT_D = 0.25
DEFAULT_L0_PER_D = 1.0 / 128
DEFAULT_K = 32


class NoOptions(BaseModel):
    """An architecture without options of its own."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepStats:
    """Scalars of one step, as tensors (the caller turns them into floats when it logs)."""

    loss: Tensor
    mse: Tensor  # sum over d_in of squared error, mean over batch
    sparsity: Tensor  # the sparsity penalty before its coefficient (0 where there is none)
    aux: Tensor  # an auxiliary loss before its coefficient (e.g. AuxK), else 0
    l0: Tensor  # mean active latents per token
    counts: Tensor  # [d_sae] float: tokens on which each latent fired in this batch
    extra: dict[str, Tensor] = field(default_factory=dict)

    def detached(self) -> "StepStats":
        return StepStats(
            self.loss.detach(), self.mse.detach(), self.sparsity.detach(), self.aux.detach(),
            self.l0.detach(), self.counts.detach(), {k: v.detach() for k, v in self.extra.items()},
        )


@dataclass
class StepContext:
    """What one step needs beyond the parameters and the batch."""

    sparsity_coefficient: float  # after its warm-up
    k: int  # active latents per token, for architectures that use k
    dead: Tensor  # [d_sae] bool: latents that have not fired for `dead_tokens`
    apply_b_dec_to_input: bool
    weight_sparsity_by_decoder_norm: bool  # "penalty" decoder norms: L1 weighted by ||W_dec[i]||
    options: Any  # the architecture's validated Options
    sparse: bool = False  # an accelerated step may take its sparse path


class SAEParameters(nn.Module):
    """Trainable tensors of one SAE in the training layout (see module docstring)."""

    def __init__(
        self, d_in: int, d_sae: int, latent_vectors: Sequence[str] = (), decoder_bias: bool = True
    ) -> None:
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        self.W_encT = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in), requires_grad=decoder_bias)
        for name in latent_vectors:
            self.register_parameter(name, nn.Parameter(torch.zeros(d_sae)))
        self._workspaces: dict[str, Tensor] = {}  # scratch tensors (`workspace`), never saved

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def per_latent(self) -> list[nn.Parameter]:
        """Parameters with one row (or entry) per latent."""
        return [p for p in self.parameters() if p.shape[0] == self.d_sae]

    def workspace(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A scratch tensor kept between steps (not state: never saved), so a large per-step buffer
        does not cost a fresh allocation every step."""
        buffer = self._workspaces.get(name)
        if buffer is None or buffer.shape != torch.Size(shape) or buffer.dtype != dtype:
            buffer = self._workspaces[name] = torch.empty(shape, dtype=dtype, device=self.W_dec.device)
        return buffer

    def encoder_input(self, x: Tensor, apply_b_dec_to_input: bool) -> Tensor:
        return x - self.b_dec if apply_b_dec_to_input else x

    def pre_activations(self, x: Tensor, apply_b_dec_to_input: bool) -> Tensor:
        """`[B, d_sae]` encoder pre-activations (differentiable)."""
        return torch.addmm(self.b_enc, self.encoder_input(x, apply_b_dec_to_input), self.W_encT.t())

    def decode(self, f: Tensor) -> Tensor:
        return torch.addmm(self.b_dec, f, self.W_dec)


def mse_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Squared error summed over d_in, averaged over the batch."""
    return (x_hat - x).pow(2).sum(-1).mean()


def zero(device: torch.device) -> Tensor:
    return torch.zeros((), device=device)


AcceleratedStep = Callable[[SAEParameters, Tensor, StepContext], StepStats]


class TrainingSpec:
    """One SAE architecture as the trainer sees it. Subclass it in an architecture module.

    The default `loss` is the architecture's definition; an `accelerated_step` (hand-written
    forward and backward, e.g. sparse kernels) may be registered beside it and must give the
    same loss and gradients (tests check every registered one against `loss`)."""

    name: ClassVar[str]  # the training name users type (`--architecture`)
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    uses_k: ClassVar[bool] = False  # the `k` option sets the sparsity
    penalty: ClassVar[Literal["l1", "l0"] | None] = None  # the `l1` option weighs this penalty
    default_decoder_norm: ClassVar[Literal["penalty", "unit"]] = "unit"
    latent_vectors: ClassVar[tuple[str, ...]] = ()  # extra per-latent parameters
    accelerated_step: ClassVar[AcceleratedStep | None] = None

    # -- configuration ------------------------------------------------------------------------

    def options(self, values: dict[str, Any]) -> BaseModel:
        """The validated options of this architecture (ConfigError naming the bad one)."""
        try:
            return self.Options(**values)
        except Exception as exc:  # pydantic.ValidationError
            raise ConfigError(f"{self.name} options: {exc}") from None

    def check(self, d_sae: int, k: int) -> None:
        """Raise ConfigError for settings this architecture cannot train."""
        if self.uses_k and k > d_sae:
            raise ConfigError(f"k={k} exceeds d_sae={d_sae}: choose k <= d_sae")

    def default_sparsity(self, d_in: int) -> float:
        if self.penalty == "l1":
            return DEFAULT_L1_PER_SQRT_D * math.sqrt(d_in)
        if self.penalty == "l0":
            return DEFAULT_L0_PER_D * d_in
        return 0.0

    def hyperparameters(self, sparsity: float, k: int) -> dict[str, Any]:
        """Architecture settings recorded beside the dictionary (cfg.json, store)."""
        out: dict[str, Any] = {"trained_as": self.name}
        if self.penalty is not None:
            out["l1_coefficient" if self.penalty == "l1" else "l0_coefficient"] = sparsity
        if self.uses_k:
            out["k"] = k
        return out

    # -- training --------------------------------------------------------------------------------

    def create_parameters(self, d_in: int, d_sae: int, decoder_bias: bool) -> SAEParameters:
        return SAEParameters(d_in, d_sae, self.latent_vectors, decoder_bias=decoder_bias)

    def init_latent_vectors(self, params: SAEParameters, options: Any) -> None:
        """Initialise the architecture's own per-latent parameters (after the shared init)."""

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        """`[B, d_sae]` feature activations of the SAE under training (no gradient needed)."""
        raise NotImplementedError

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        """The step's loss as a differentiable tensor (`stats.loss`) plus its statistics."""
        raise NotImplementedError

    def initial_state(self) -> dict[str, float]:
        """Scalars the architecture carries between steps (checkpointed with the trainer)."""
        return {}

    def after_step(self, params: SAEParameters, stats: StepStats, state: dict[str, float], step_index: int,
                   options: Any) -> None:
        """Update parameters or state after the optimiser step (e.g. clamp, running averages)."""

    def history_extras(self, state: dict[str, float]) -> dict[str, float]:
        """Extra columns of the training history."""
        return {}

    # -- result ----------------------------------------------------------------------------------

    def inference_dictionary(
        self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None, apply_b_dec_to_input: bool,
        state: dict[str, float], scale: float,
    ) -> Dictionary:
        """The inference dictionary in raw activation units (inputs were multiplied by `scale`)."""
        raise NotImplementedError

    def finish(self, dictionary: Dictionary) -> None:
        """Final normalisation: unit-norm decoder rows, folded into the encoder (default)."""
        dictionary.fold_decoder_norms()  # type: ignore[attr-defined]


def copy_linear_weights(dictionary: Dictionary, params: SAEParameters, scale: float) -> None:
    """Copy W_enc, b_enc, W_dec, b_dec into `dictionary`, undoing the input scale `scale`."""
    with torch.no_grad():
        dictionary.W_enc.copy_(params.W_encT.t())  # type: ignore[attr-defined]
        dictionary.b_enc.copy_(params.b_enc / scale)  # type: ignore[attr-defined]
        dictionary.W_dec.copy_(params.W_dec)
        dictionary.b_dec.copy_(params.b_dec / scale)


def renormalise_decoder(dictionary: Dictionary) -> None:
    """Divide decoder rows by their norms (for architectures trained with unit-norm rows)."""
    with torch.no_grad():
        dictionary.W_dec.div_(dictionary.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
