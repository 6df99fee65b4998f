"""The accelerated (hand-written, sparse) training steps give the same losses and gradients as autograd:
the registered architectures' own autograd losses, and direct autograd references."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from saescope.dictionaries import sparse_kernels as K
from saescope.dictionaries.architectures import TRAINING_SPECS
from saescope.dictionaries.training_spec import SAEParameters, StepContext

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

B, D, S = 64, 16, 48


def _params(seed: int = 0, threshold: bool = False) -> SAEParameters:
    g = torch.Generator().manual_seed(seed)
    p = SAEParameters(D, S, ("threshold",) if threshold else ())
    with torch.no_grad():
        p.W_encT.copy_(torch.randn(S, D, generator=g) * 0.3)
        p.W_dec.copy_(torch.randn(S, D, generator=g) * 0.3)
        p.b_enc.copy_(torch.randn(S, generator=g) * 0.1)
        p.b_dec.copy_(torch.randn(D, generator=g) * 0.1)
        if threshold:
            p.threshold.copy_(torch.rand(S, generator=g) * 0.3)
    return p


def _x(seed: int = 1) -> Tensor:
    return torch.randn(B, D, generator=torch.Generator().manual_seed(seed))


def _reference(p: SAEParameters) -> dict[str, Tensor]:
    return {name: t.detach().clone().requires_grad_(True) for name, t in p.named_parameters()}


def _assert_grads(p: SAEParameters, ref: dict[str, Tensor]) -> None:
    for name, t in p.named_parameters():
        assert t.grad is not None, name
        torch.testing.assert_close(t.grad, ref[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def _mse(r: dict[str, Tensor], f: Tensor, x: Tensor) -> Tensor:
    return (f @ r["W_dec"] + r["b_dec"] - x).pow(2).sum(-1).mean()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_relu_l1_step_matches_autograd(sparse: bool, weighted: bool) -> None:
    p, x, l1 = _params(), _x(), 0.7
    r = _reference(p)
    pre = (x - r["b_dec"]) @ r["W_encT"].t() + r["b_enc"]
    f = torch.relu(pre)
    norms = r["W_dec"].norm(dim=1) if weighted else torch.ones(S)
    loss = _mse(r, f, x) + l1 * (f * norms).sum(-1).mean()
    loss.backward()
    step = K.relu_l1_sparse_step if sparse else K.relu_l1_step
    stats = step(p, x, l1, weight_l1_by_decoder_norm=weighted)
    torch.testing.assert_close(stats.loss, loss.detach(), rtol=1e-5, atol=1e-5)
    _assert_grads(p, r)


def _aux_reference(r: dict[str, Tensor], pre: Tensor, x: Tensor, f: Tensor, dead: Tensor, aux_k: int) -> Tensor:
    residual = (x - (f @ r["W_dec"] + r["b_dec"])).detach()
    masked = pre.masked_fill(~dead, float("-inf"))
    ka = min(aux_k, int(dead.sum()))
    vals, idx = masked.topk(ka, dim=1)
    fa = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
    scale = min(int(dead.sum()) / aux_k, 1.0)
    return scale * (fa @ r["W_dec"] - residual).pow(2).sum(-1).mean()


@pytest.mark.parametrize("aux_path", ["dense", "sparse"])
@pytest.mark.parametrize("block_bytes", [2**30, 1500])  # one block, and row blocks of ~8 rows
@pytest.mark.parametrize("n_dead", [0, 5, 30])
def test_topk_step_with_auxk_matches_autograd(n_dead: int, block_bytes: int, aux_path: str, monkeypatch) -> None:
    monkeypatch.setattr(K, "ENCODE_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(K, "AUX_DENSE_FACTOR", 4 if aux_path == "dense" else 0)
    p, x, k, aux_k, coef = _params(), _x(), 6, 12, 0.5
    dead = torch.zeros(S, dtype=torch.bool)
    dead[torch.randperm(S, generator=torch.Generator().manual_seed(3))[:n_dead]] = True
    r = _reference(p)
    pre = (x - r["b_dec"]) @ r["W_encT"].t() + r["b_enc"]
    vals, idx = pre.topk(k, dim=1)
    f = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
    loss = _mse(r, f, x) + (coef * _aux_reference(r, pre, x, f, dead, aux_k) if n_dead else 0.0)
    loss.backward()
    stats = K.topk_step(p, x, k, dead, aux_k, coef)
    torch.testing.assert_close(stats.loss, loss.detach(), rtol=1e-5, atol=1e-5)
    assert float(stats.l0) <= k
    _assert_grads(p, r)


def test_batchtopk_step_keeps_k_per_token_on_average_and_matches_autograd() -> None:
    p, x, k = _params(), _x(), 5
    dead = torch.zeros(S, dtype=torch.bool)
    r = _reference(p)
    pre = (x - r["b_dec"]) @ r["W_encT"].t() + r["b_enc"]
    kth = pre.detach().flatten().topk(k * B).values.min()
    f = pre * ((pre.detach() >= kth) & (pre.detach() > 0))
    loss = _mse(r, f, x)
    loss.backward()
    stats = K.batchtopk_step(p, x, k, dead, 8, 0.1)
    torch.testing.assert_close(stats.loss, loss.detach(), rtol=1e-5, atol=1e-5)
    assert float(stats.l0) == pytest.approx(k)
    torch.testing.assert_close(stats.extra["min_kept"], kth.detach())
    _assert_grads(p, r)


@pytest.mark.parametrize("sparse", [False, True])
def test_jumprelu_step_matches_saelens_straight_through_estimator(sparse: bool) -> None:
    from sae_lens.saes.jumprelu_sae import JumpReLU, Step

    p, x, l0, bw = _params(threshold=True), _x(), 0.3, 0.2
    r = _reference(p)
    pre = (x - r["b_dec"]) @ r["W_encT"].t() + r["b_enc"]
    f = JumpReLU.apply(pre, r["threshold"], bw, False)
    loss = _mse(r, f, x) + l0 * Step.apply(pre, r["threshold"], bw, False).sum(-1).mean()
    loss.backward()
    stats = K.jumprelu_step(p, x, l0, bw, sparse=sparse)
    torch.testing.assert_close(stats.loss, loss.detach(), rtol=1e-5, atol=1e-5)
    _assert_grads(p, r)


def test_batchtopk_candidate_fast_path_matches_the_full_selection() -> None:
    g = torch.Generator().manual_seed(4)
    pre = torch.randn(256, 512, generator=g) * torch.rand(256, 1, generator=g) * 3  # uneven rows
    rows, cols, vals = K._batch_topk_entries(pre, 8)
    kth = pre.flatten().topk(8 * 256).values.min()
    want = ((pre >= kth) & (pre > 0)).nonzero()
    got = torch.stack([rows, cols], 1)
    assert torch.equal(got[torch.argsort(got[:, 0] * 512 + got[:, 1])], want)
    torch.testing.assert_close(vals, pre[rows, cols])
    # a saturated row (one token holding most of the mass) falls back to the exact selection
    pre[0] = 100.0 + torch.rand(512, generator=g)
    rows, cols, _ = K._batch_topk_entries(pre, 8)
    assert int((rows == 0).sum()) == 512


@pytest.mark.parametrize(("rows", "cols", "k", "group"), [(64, 4096, 32, 8), (33, 48, 6, 4), (7, 40, 3, 8), (5, 30, 4, 8)])
def test_two_stage_topk_rows_equals_torch_topk(rows: int, cols: int, k: int, group: int) -> None:
    """Same values as torch.topk (ties included: integer-valued rows), columns pointing at them."""
    g = torch.Generator().manual_seed(rows)
    for pre in (torch.randn(rows, cols, generator=g), torch.randint(0, 5, (rows, cols), generator=g).float()):
        values, columns = K.topk_rows(pre, k, group)
        expected = pre.topk(k, dim=1).values
        torch.testing.assert_close(values.sort(1, descending=True).values, expected, rtol=0, atol=0)
        torch.testing.assert_close(pre.gather(1, columns), values, rtol=0, atol=0)
        assert all(len(set(r)) == k for r in columns.tolist())  # k distinct columns per row


ACCELERATED = sorted(name for name, spec in TRAINING_SPECS.items() if spec.accelerated_step is not None)


def _spec_params(name: str, seed: int = 0) -> SAEParameters:
    spec = TRAINING_SPECS[name]
    g = torch.Generator().manual_seed(seed)
    p = spec.create_parameters(D, S, decoder_bias=True)
    with torch.no_grad():
        for param_name, param in p.named_parameters():
            param.copy_(torch.randn(param.shape, generator=g) * (0.3 if param.dim() == 2 else 0.1))
        if hasattr(p, "threshold"):
            p.threshold.copy_(torch.rand(S, generator=g) * 0.3)
    return p


def test_the_four_classic_architectures_register_an_accelerated_step() -> None:
    assert {"relu", "topk", "batchtopk", "jumprelu"} <= set(ACCELERATED)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_dead", [0, 7])
@pytest.mark.parametrize("name", ACCELERATED)
def test_every_accelerated_step_matches_its_architectures_autograd_loss(name: str, n_dead: int, weighted: bool,
                                                                         sparse: bool) -> None:
    spec = TRAINING_SPECS[name]
    dead = torch.zeros(S, dtype=torch.bool)
    dead[:n_dead] = True
    options = spec.options({})
    if "aux_k" in spec.Options.model_fields:
        options = spec.options({"aux_k": 12, "aux_coefficient": 0.5})
    elif "bandwidth" in spec.Options.model_fields:
        options = spec.options({"bandwidth": 0.2})
    ctx = StepContext(sparsity_coefficient=0.7, k=6, dead=dead, apply_b_dec_to_input=True,
                      weight_sparsity_by_decoder_norm=weighted, options=options, sparse=sparse)
    x = _x()
    reference = _spec_params(name)
    with torch.enable_grad():
        want = spec.loss(reference, x, ctx)
        want.loss.backward()
    accelerated = _spec_params(name)
    with torch.no_grad():
        got = spec.accelerated_step(accelerated, x, ctx)
    torch.testing.assert_close(got.loss, want.loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.l0, want.l0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.counts, want.counts)
    for param_name, param in accelerated.named_parameters():
        assert param.grad is not None, param_name
        torch.testing.assert_close(param.grad, dict(reference.named_parameters())[param_name].grad,
                                   rtol=1e-4, atol=1e-5, msg=param_name)
