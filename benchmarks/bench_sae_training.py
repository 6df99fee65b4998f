"""Benchmark: SAE training step throughput on CPU, against the matmul bound and sae-lens, in one run.

Shapes (default): d_in 512, d_sae 4096, batch 4096, fp32, 2 threads. Prints
  * the dense matmul rate (GFLOP/s) of the step's own shapes,
  * saescope ReLU+L1 (dense path, as at the start of training) and ReLU+L1 once sparse (L0 ~ 32,
    as after the first part of training), TopK k=32 (sparse kernels) and BatchTopK k=32 tokens/s,
  * the matmul bound in tokens/s, rate / (6 d_in d_sae) (the usual 6N with N = d_in d_sae) and the
    share of it each step reaches; also the FLOPs a dense step really does (5 matmuls = 10 d_in d_sae per token),
  * sae-lens 6.x `SAETrainer(...).fit()` on a tensor iterator, standard and topk, same shapes,
    and our speed-up over it,
  * each architecture's plain autograd step (`accelerated=False`), and how much faster its
    registered accelerated step is (the figure that justifies keeping an accelerator).
Candidates are timed round-robin (one step of each per round, medians over rounds), so a change in
machine load affects all of them alike and the ratios stay meaningful on a shared machine.
With --whole-run-steps N it also trains a ReLU+L1 SAE from initialisation for N steps on planted-
dictionary activations and reports the whole run's tokens/s against the same bound (the dense start
and the sparse remainder together).
Usage: nice -n 10 .venv/bin/python benchmarks/bench_sae_training.py [--quick] [--threads 2] [--whole-run-steps 256]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable

import torch

warnings.filterwarnings("ignore")


def make_ours(arch: str, B: int, d: int, S: int, k: int, sparse: str = "auto", target_l0: float | None = None,
              accelerated: bool = True):
    """A callable doing one saescope training step on a fixed in-memory batch, and an L0 probe."""
    from saescope.dictionaries.training import SAETrainer, SAETrainingConfig

    cfg = SAETrainingConfig(
        architecture=arch, d_sae=S, k=k, l1=1.0, tokens=10**9, batch_size=B, sparse_kernels=sparse,
        lr_warmup_fraction=0.0, accelerated=accelerated,
    )
    trainer = SAETrainer(cfg, d, 1.0, None)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(0))
    if target_l0 is not None:  # put the ReLU SAE in the sparse regime of later training
        with torch.no_grad():
            pre = x[:512] @ trainer.params.W_encT.t()
            q = 1.0 - target_l0 / S
            trainer.params.b_enc.fill_(-float(pre.flatten().kthvalue(int(q * pre.numel())).values))
    l0: list[float] = []

    def step() -> None:
        stats = trainer.step(x)
        l0.append(float(stats.l0))

    return step, l0


def whole_relu_run(B: int, d: int, S: int, steps: int) -> tuple[float, float, float]:
    """(tokens/s, share of steps on the sparse path, final L0) of a ReLU+L1 SAE trained from
    initialisation for `steps` steps with default settings, on activations from a planted dictionary
    (S unit directions in R^d, ~8 active per token; generated before timing, cycled)."""
    from saescope.dictionaries.training import SAETrainer, SAETrainingConfig
    from saescope.dictionaries.training_synthetic import PlantedDictionary

    planted = PlantedDictionary.random(S, d, p_active=8.0 / S, seed=0)
    pool = list(planted.batches(min(steps, 32) * B, batch=B, seed=1))
    cfg = SAETrainingConfig(architecture="relu", d_sae=S, tokens=steps * B, batch_size=B)
    trainer = SAETrainer(cfg, d, 1.0, None)
    sparse_steps, l0 = 0, 0.0
    t0 = time.perf_counter()
    for i in range(steps):
        sparse_steps += trainer._use_sparse()
        l0 = float(trainer.step(pool[i % len(pool)]).l0)
    seconds = time.perf_counter() - t0
    return steps * B / seconds, sparse_steps / steps, l0


def make_saelens(arch: str, B: int, d: int, S: int, k: int):
    """A callable doing one iteration of sae-lens SAETrainer.fit()'s loop body (maybe_reset_sparsity,
    step, checkpoint check, step counter) on a fixed in-memory batch."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    cls, cfg_cls = get_sae_training_class("standard" if arch == "relu" else arch)
    extra: dict[str, Any] = {"k": k} if arch == "topk" else {"l1_coefficient": 1.0}
    sae = cls(cfg_cls(d_in=d, d_sae=S, dtype="float32", device="cpu", **extra))
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(0))
    trainer_cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        total_training_samples=B * 10**6, device="cpu", autocast=False, lr=3e-4, lr_end=3e-4,
        lr_scheduler_name="constant", lr_warm_up_steps=0, adam_beta1=0.9, adam_beta2=0.999,
        lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=B, dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=iter(()))
    trainer.sae.to("cpu")

    def step() -> None:
        trainer.maybe_reset_sparsity()
        trainer.step(x)
        trainer._checkpoint_if_needed()
        trainer.n_training_steps += 1

    return step


def check_saelens_fit(B: int, d: int, S: int, k: int) -> float:
    """Seconds per step of a short real `SAETrainer(...).fit()` (topk), to validate the loop-body timing."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.registry import get_sae_training_class
    from sae_lens.training.sae_trainer import SAETrainer

    cls, cfg_cls = get_sae_training_class("topk")
    sae = cls(cfg_cls(d_in=d, d_sae=S, dtype="float32", device="cpu", k=k))
    x = torch.randn(B, d)
    steps = 4
    cfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        total_training_samples=B * steps, device="cpu", autocast=False, lr=3e-4, lr_end=3e-4,
        lr_scheduler_name="constant", lr_warm_up_steps=0, adam_beta1=0.9, adam_beta2=0.999,
        lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=B, dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
        n_batches_for_norm_estimate=1,
    )

    def forever():  # noqa: ANN202
        while True:
            yield x

    t0 = time.perf_counter()
    SAETrainer(cfg=cfg, sae=sae, data_provider=forever()).fit()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds (smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-saelens", action="store_true", help="skip the sae-lens baseline")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds")
    parser.add_argument("--whole-run-steps", type=int, default=0,
                        help="also time a whole ReLU+L1 run of this many steps from initialisation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, d, S, k = (1024, 128, 1024, 16) if args.quick else (4096, 512, 4096, 32)
    rounds = args.rounds or (3 if args.quick else 7)
    print(f"shapes: batch {B}, d_in {d}, d_sae {S}, k {k}; fp32; {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}; {rounds} interleaved rounds, medians")

    xg, Wg = torch.randn(B, d), torch.randn(S, d)
    fg, gg = torch.randn(B, S), torch.randn(B, d)
    candidates: dict[str, Callable[[], Any]] = {
        "matmul enc [B,d]@[d,S]": lambda: torch.mm(xg, Wg.t()),
        "matmul dec [B,S]@[S,d]": lambda: torch.mm(fg, Wg),
        "matmul grad [S,B]@[B,d]": lambda: torch.mm(fg.t(), gg),
    }
    probes: dict[str, list[float]] = {}
    for name, arch, sparse, target in [
        ("saescope relu+L1 (dense path)", "relu", "never", None),
        ("saescope relu+L1 (sparse regime)", "relu", "auto", 32.0),
        (f"saescope topk k={k} (sparse)", "topk", "auto", None),
        (f"saescope batchtopk k={k}", "batchtopk", "auto", None),
        ("saescope jumprelu (dense path)", "jumprelu", "never", None),
    ]:
        candidates[name], probes[name] = make_ours(arch, B, d, S, k, sparse, target)
    autograd = {  # each architecture's plain autograd step, against its accelerated step above
        "saescope relu+L1 (sparse regime)": ("relu", 32.0),
        f"saescope topk k={k} (sparse)": ("topk", None),
        f"saescope batchtopk k={k}": ("batchtopk", None),
        "saescope jumprelu (dense path)": ("jumprelu", None),
        "saescope gated": ("gated", None),
    }
    for accelerated_name, (arch, target) in autograd.items():
        name = f"saescope {arch} autograd"
        candidates[name], probes[name] = make_ours(arch, B, d, S, k, "never", target, accelerated=False)
    if not args.no_saelens:
        candidates["sae-lens standard (fit loop)"] = make_saelens("relu", B, d, S, k)
        candidates[f"sae-lens topk k={k} (fit loop)"] = make_saelens("topk", B, d, S, k)

    times: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():  # warm-up
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}

    flops = 2.0 * B * d * S
    rates = {name: flops / med[name] / 1e9 for name in med if name.startswith("matmul")}
    for name, r in rates.items():
        print(f"{name}: {r:7.1f} GFLOP/s")
    rate = statistics.median(rates.values())
    bound = rate * 1e9 / (6 * d * S)
    print(f"dense matmul rate (median of the 3 shapes): {rate:.1f} GFLOP/s")
    print(f"matmul bound: {bound:,.0f} tokens/s at 6*d_in*d_sae FLOPs/token; a dense step really does 5 "
          f"matmuls = 10*d_in*d_sae FLOPs/token, bound {rate * 1e9 / (10 * d * S):,.0f} tokens/s")
    base = {"relu": med.get("sae-lens standard (fit loop)"), "topk": med.get(f"sae-lens topk k={k} (fit loop)")}
    print()
    print(f"{'step':36s} {'tokens/s':>10s} {'share of bound':>15s} {'vs sae-lens':>12s}")
    for name, sec in med.items():
        if name.startswith("matmul"):
            continue
        tps = B / sec
        ref = base["topk"] if ("topk" in name and "batchtopk" not in name) else base["relu"]
        vs = f"{ref / sec:10.2f}x" if ref and name.startswith("saescope") else ""
        note = f"L0 {statistics.median(probes[name]):.0f}" if name in probes else ""
        print(f"{name:36s} {tps:10,.0f} {tps / bound:14.2f}x {vs:>12s}  {note}")
    print()
    for accelerated_name, (arch, _) in autograd.items():
        if accelerated_name in med:
            print(f"{arch}: accelerated step {med[f'saescope {arch} autograd'] / med[accelerated_name]:.2f}x "
                  "the speed of its autograd step")
    if args.whole_run_steps:
        tps, sparse_share, l0 = whole_relu_run(B, d, S, args.whole_run_steps)
        print(f"\nwhole ReLU+L1 run from initialisation ({args.whole_run_steps} steps, {args.whole_run_steps * B:,} tokens, "
              f"planted-dictionary data): {tps:,.0f} tokens/s = {tps / bound:.2f}x the bound; "
              f"{sparse_share:.0%} of steps on the sparse path; final L0 {l0:.1f}")
    if not args.no_saelens:
        fit = check_saelens_fit(B, d, S, k)
        print(f"\ncheck: a real sae-lens topk SAETrainer.fit() of 4 steps: {B / fit:,.0f} tokens/s "
              f"(loop-body timing above: {B / base['topk']:,.0f}); timing drifts with machine load")


if __name__ == "__main__":
    main()
