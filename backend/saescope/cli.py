"""The `saescope` command line: one sub-command per job, each a thin call into pipeline, engine or api.

Owns argument parsing, turning options into the stages' pydantic configs, and printing errors. Every
`SaescopeError` (and pydantic validation error) is printed as one clear message with exit status 2 and
no traceback; stages are imported lazily so `--help` answers instantly.

Stable forms (other tools script them):
    saescope demo [--atlas DIR] [--no-serve]
    saescope serve --atlas DIR [--host H] [--port P]
    saescope train-sae --activations FILE --architecture A --d-sae N
                       [--k K] [--l1 C] [--tokens N] [--seed S] --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from saescope import __version__

DEFAULT_ATLAS = Path("atlas")
DEFAULT_CHECKPOINT_EVERY = 1_000_000  # train-sae: tokens between checkpoints (OUT/checkpoint/)
DEFAULT_HOOK = "blocks.0.mlp.hook_post"  # train-sae --model without --hook
HOOK_HELP = (
    "transformer_lens hook point, e.g. blocks.0.mlp.hook_post, blocks.0.hook_resid_post, "
    "blocks.0.hook_mlp_out, blocks.0.hook_attn_out, blocks.0.attn.hook_z"
)


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


# --------------------------------------------------------------------------- command handlers


def cmd_demo(args: argparse.Namespace) -> None:
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import preset

    overrides: dict[str, object] = {"seed": args.seed, "device": args.device}
    if args.baselines is not None:
        overrides["baselines"] = [b for b in args.baselines.split(",") if b]
    if args.prune or args.finetune:
        overrides["postprocess"] = {"prune": args.prune, "finetune": args.finetune}
    name = "builtin-tiny" if args.tiny and args.preset == "builtin" else args.preset
    if args.tiny and args.preset != "builtin":
        raise_config("--tiny is the tiny built-in atlas; it does not combine with --preset")
    report = build_atlas(args.atlas, preset(name, **overrides))
    print(report.summary())
    if not args.no_serve:
        _serve(args.atlas, None, args.host, args.port, args.device, _security_from_args(args), **_model_work_from_args(args))


def _build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The build config values the command line's flags set (only those given)."""
    out: dict[str, Any] = {}
    if args.model is not None:
        out["model"] = {"location": args.model}
    if args.dtype is not None:
        out.setdefault("model", {})["dtype"] = args.dtype
    corpus = {k: v for k, v in (("source", args.corpus), ("context_length", args.context_length)) if v is not None}
    if corpus:
        out["corpus"] = corpus
    if args.hook:
        out["hooks"] = list(args.hook)
    if args.sae:
        out["sae_folders"] = [str(p) for p in args.sae]
    if args.architecture is not None or args.d_sae is not None or args.k is not None:
        if args.d_sae is None or args.architecture is None:
            raise_config("--architecture and --d-sae go together (and --k for k-sparse architectures)")
        out["saes"] = [{"architecture": args.architecture, "d_sae": args.d_sae, "k": args.k}]
    elif args.sae and args.hook is None:
        out["hooks"], out["saes"] = [], []
    if args.baselines is not None:
        out["baselines"] = [b for b in args.baselines.split(",") if b]
    if args.explainer is not None:
        out["explain"] = {"explainer": args.explainer}
    for flag, key in (("tokens", "sae_tokens"), ("seed", "seed"), ("device", "device"), ("nproc", "nproc"),
                      ("max_norm_ratio", "max_norm_ratio")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    return out


def cmd_build(args: argparse.Namespace) -> None:
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import load_build_config

    overrides = _build_overrides(args)
    preset_name = args.preset
    if args.config is None and preset_name is None and "model" in overrides:
        # a flag-only build of the user's model: no SAEs or baselines but those asked for
        overrides.setdefault("saes", [])
        overrides.setdefault("baselines", [])
    if args.config is None and preset_name is None:
        preset_name = "builtin"
    config = load_build_config(args.config, preset_name, overrides)
    if args.print_config:
        print(config.model_dump_json(indent=2))
        return
    report = build_atlas(args.atlas, config, store_url=args.db)
    print(report.summary())


def cmd_train_lm(args: argparse.Namespace) -> None:
    from saescope.lm.builtin import BuiltinLMConfig, build_builtin_lm

    overrides = {"seed": args.seed}
    if args.tokens is not None:
        overrides["train_tokens"] = args.tokens
    config = BuiltinLMConfig(**overrides)
    report = build_builtin_lm(config, args.out)
    _print_json(report.model_dump())


def _launch_ranks_if_asked(args: argparse.Namespace) -> bool:
    """`--nproc N` with N > 1: run this same command as N gloo ranks on this machine (rank 0 prints
    and writes) and return True once every rank has finished; False when N is 1."""
    if args.nproc < 1:
        raise_config(f"--nproc must be at least 1, not {args.nproc}")
    if args.nproc == 1:
        return False
    from saescope.ranks import launch_ranks

    argv, skip = [], False
    for item in args.argv:  # the command line without --nproc N
        if skip or item == "--nproc" or item.startswith("--nproc="):
            skip = item == "--nproc"
            continue
        argv.append(item)
    launch_ranks(argv, args.nproc)
    return True


def cmd_train_sae(args: argparse.Namespace) -> None:
    if args.activations is None and args.model is None:
        raise_config("train-sae needs --activations FILE, or --model LOCATION with --hook HOOK")
    if _launch_ranks_if_asked(args):
        return
    from saescope.dictionaries.training import SAETrainingConfig
    from saescope.ranks import current_ranks

    ranks = current_ranks()  # under torchrun: join the group before anything lands on a device

    from saescope.devices import resolve_device

    config_fields: dict[str, object] = {
        "architecture": args.architecture,
        "d_sae": args.d_sae,
        "seed": args.seed,
        "device": str(resolve_device(args.device)),  # the SAE trains there too (each rank on its own GPU)
    }
    for name in ("k", "l1", "tokens", "lr", "batch_size"):
        value = getattr(args, name)
        if value is not None:
            config_fields[name] = value
    checkpoint_every = args.checkpoint_every if args.checkpoint_every is not None else DEFAULT_CHECKPOINT_EVERY
    if args.activations is not None:
        from saescope.pipeline.activations import train_sae_on_activations

        SAETrainingConfig(**{**config_fields, "tokens": args.tokens or 1})  # refuse bad options before reading
        result = train_sae_on_activations(
            args.activations, config_fields, args.out, hook_name=args.hook, model_name=args.model,
            checkpoint_every=checkpoint_every, resume=not args.no_resume, max_norm_ratio=args.max_norm_ratio or None,
        )
    else:
        from saescope.pipeline.dictionaries import train_sae_on_model

        result = train_sae_on_model(
            args.model, args.hook or DEFAULT_HOOK, SAETrainingConfig(**config_fields), args.out, device=args.device,
            checkpoint_every=checkpoint_every, resume=not args.no_resume, eval_contexts=args.eval_contexts,
            max_norm_ratio=args.max_norm_ratio or None,
        )
    if not ranks.is_main:
        return
    print(f"saved {args.architecture} SAE with {args.d_sae} features to {args.out}")
    if hasattr(result, "summary"):
        print(result.summary())


def cmd_cache_activations(args: argparse.Namespace) -> None:
    from saescope.pipeline.activations import cache_activations_to_file

    path = cache_activations_to_file(args.model, args.hook, args.tokens, args.out, device=args.device, seed=args.seed)
    print(f"wrote activations to {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from saescope.pipeline.dictionaries import evaluate_sae_folder

    metrics = evaluate_sae_folder(args.model, args.sae, n_contexts=args.contexts, device=args.device)
    if args.json:
        _print_json(metrics.model_dump())
        return
    print(_metrics_table(metrics.model_dump()))
    print(f"full metrics (histograms, densities): {args.sae / 'metrics.json'}; --json prints them")


HEADLINE_METRICS = (
    ("hook_name", "hook point", "{}"),
    ("n_tokens", "tokens evaluated", "{:,}"),
    ("d_sae", "features", "{:,}"),
    ("l0", "L0", "{:.2f}"),
    ("explained_variance", "explained variance", "{:.4f}"),
    ("cosine", "cosine", "{:.4f}"),
    ("ce_clean", "CE clean (nats)", "{:.4f}"),
    ("ce_spliced", "CE spliced", "{:.4f}"),
    ("ce_recovered", "CE recovered", "{:.4f}"),
    ("kl", "KL(clean||spliced)", "{:.4f}"),
    ("dead", "dead features", "{:,}"),
    ("dense", "dense features", "{:,}"),
)


def _metrics_table(metrics: dict[str, Any]) -> str:
    """The headline metrics of an evaluation as an aligned two-column table."""
    rows = []
    for key, label, fmt in HEADLINE_METRICS:
        value = metrics.get(key)
        text = "n/a" if value is None else fmt.format(value)
        if key in ("dead", "dense") and value is not None and metrics.get("d_sae"):
            text += f" ({value / metrics['d_sae']:.1%})"
        rows.append((label, text))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def cmd_precompute(args: argparse.Namespace) -> None:
    if _launch_ranks_if_asked(args):
        return
    from saescope.pipeline.folders import precompute_folders
    from saescope.ranks import current_ranks

    current_ranks()  # under torchrun: join the group before anything lands on a device
    report = precompute_folders(
        atlas=args.atlas,
        model_location=args.model,
        sae_folders=args.sae,
        store_url=args.db,
        n_contexts=args.contexts,
        device=args.device,
    )
    if report:
        print(report)


def cmd_serve(args: argparse.Namespace) -> None:
    _serve(args.atlas, args.db, args.host, args.port, args.device, _security_from_args(args), **_model_work_from_args(args))


def cmd_import_sae(args: argparse.Namespace) -> None:
    from saescope.dictionaries.interop import import_sae

    report = import_sae(
        args.path, args.out, model_name=args.model_name, hook_name=args.hook_name, hook_head_index=args.hook_head_index
    )
    print(report)


def cmd_export_sae(args: argparse.Namespace) -> None:
    from saescope.dictionaries.interop import export_sae

    out = export_sae(args.path, args.out)
    print(f"exported {args.path} -> {out} (SAELens v6 format)")


def _serve(
    atlas: Path, db: str | None, host: str, port: int, device: str, security: Any = None,
    limits: dict[str, Any] | None = None, torch_threads: int | None = None, workers: int = 1,
) -> None:
    from saescope.api.app import SETTINGS_ENV, ApiSettings, create_app
    from saescope.api.server import run_server
    from saescope.api.settings import ApiLimits, ApiSecurity
    from saescope.atlas_layout import AtlasLayout

    layout = AtlasLayout(root=Path(atlas))
    if db is None and not layout.sqlite_path.is_file():
        raise_config(
            f"no atlas at {atlas}: {layout.sqlite_path} does not exist. "
            "Build one with `saescope demo --atlas DIR --no-serve` or `saescope precompute`."
        )
    security = security or ApiSecurity()
    settings = ApiSettings(
        store_url=layout.store_url(db), atlas_root=layout.root, device=device, security=security,
        limits=ApiLimits(**(limits or {})), torch_threads=torch_threads,
    )
    print(f"serving the saescope dashboard at http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    if workers == 1:
        run_server(create_app(settings), host, port, security.header_timeout_s, security.keep_alive_s, workers=1)
        return
    # worker processes are spawned afresh: each builds its app from the settings in its environment
    import os

    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    print(f"{workers} worker processes, each loading the model on its first live request")
    run_server("saescope.api.app:create_app_from_env", host, port, security.header_timeout_s,
               security.keep_alive_s, workers=workers, factory=True)


def raise_config(message: str) -> None:
    from saescope.errors import ConfigError

    raise ConfigError(message)


# --------------------------------------------------------------------------- parser


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    # model work: queues per class, per-client limits, time-out, torch threads (README, "Serving under load")
    p.add_argument("--max-queue", dest="max_queue", type=int, default=16, metavar="N",
                   help="short live requests (inference, ablation) waiting or running at once; more get 503 with "
                   "Retry-After (default 16)")
    p.add_argument("--max-steer-queue", dest="max_steer_queue", type=int, default=8, metavar="N",
                   help="steering requests waiting or running at once, in their own queue (default 8)")
    p.add_argument("--max-client-requests", dest="max_client_requests", type=int, default=12, metavar="N",
                   help="live requests one client address may have at once; more get 429 (default 12)")
    p.add_argument("--max-client-steers", dest="max_client_steers", type=int, default=2, metavar="N",
                   help="steering requests one client address may have at once; more get 429 (default 2)")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float, default=30.0, metavar="SECONDS",
                   help="a live request waiting and running longer gets 504 (default 30)")
    p.add_argument("--torch-threads", dest="torch_threads", type=int, default=None, metavar="N",
                   help="torch threads for model work (default: torch's choice, usually one per core)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="uvicorn worker processes, each with its own store connections and model "
                   "(default: $SAESCOPE_WORKERS, else 1)")
    # security: API key, Host allow-list, connection time-outs (README, "Deploying on a shared server")
    p.add_argument("--api-key", dest="api_key", default=None,
                   help="key the live endpoints (inference, steer, ablate) require as `Authorization: Bearer KEY` "
                   "or `X-API-Key: KEY` (default: $SAESCOPE_API_KEY; unset: open)")
    p.add_argument("--protect-reads", dest="protect_reads", action="store_true",
                   help="require the API key on every /api/v1 endpoint, not only the live ones")
    p.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=None, metavar="NAME",
                   help="a Host name to answer besides localhost names and IP addresses (repeatable; `*.domain` "
                   "for sub-domains, `*` for any); other names get 400 (DNS rebinding)")
    p.add_argument("--header-timeout", dest="header_timeout_s", type=float, default=10.0, metavar="SECONDS",
                   help="close a connection whose request headers take longer than this (default 10)")
    p.add_argument("--keep-alive", dest="keep_alive_s", type=float, default=5.0, metavar="SECONDS",
                   help="close an idle keep-alive connection after this (default 5)")


def _model_work_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """`_serve`'s keyword arguments for the model-work serve options (ApiLimits fields, torch threads,
    worker processes)."""
    fields = ("max_queue", "max_steer_queue", "max_client_requests", "max_client_steers", "request_timeout_s")
    return {"limits": {name: getattr(args, name) for name in fields}, "torch_threads": args.torch_threads,
            "workers": _workers_from_args(args)}


def _workers_from_args(args: argparse.Namespace) -> int:
    """`--workers`, else $SAESCOPE_WORKERS, else 1; a count below 1 or not a number is refused."""
    import os

    raw = args.workers if args.workers is not None else os.environ.get("SAESCOPE_WORKERS", "1")
    try:
        workers = int(raw)
    except ValueError:
        workers = 0
    if workers < 1:
        raise_config(f"--workers (or $SAESCOPE_WORKERS) must be a whole number of processes >= 1, not {raw!r}")
    return workers


def _security_from_args(args: argparse.Namespace) -> Any:
    """The ApiSecurity of the serve options (the API key from $SAESCOPE_API_KEY when not given)."""
    import os

    from saescope.api.request_guard import default_allowed_hosts
    from saescope.api.settings import ApiSecurity

    return ApiSecurity(
        api_key=args.api_key or os.environ.get("SAESCOPE_API_KEY") or None,
        protect_reads=args.protect_reads,
        allowed_hosts=default_allowed_hosts(args.host, args.allowed_hosts),
        header_timeout_s=args.header_timeout_s,
        keep_alive_s=args.keep_alive_s,
    )


_Adder = Callable[[str, Callable[[argparse.Namespace], None], str], argparse.ArgumentParser]


def _add_demo(add: _Adder) -> None:
    """The `demo` command: the built-in atlas preset."""
    p = add(
        "demo",
        cmd_demo,
        "Build the built-in atlas (a 1-layer transformer trained on the Python standard library, its SAEs "
        "and feature records) and serve it. Reuses whatever an earlier run built.",
    )
    p.add_argument("--atlas", type=Path, default=DEFAULT_ATLAS, help="atlas directory (default ./atlas)")
    p.add_argument("--no-serve", action="store_true", help="build only; do not start the server")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    p.add_argument("--tiny", action="store_true", help="a tiny atlas in seconds (for smoke tests)")
    p.add_argument("--baselines", default=None,
                   help="comma-separated baseline dictionaries from neurons,random,pca,ica "
                   "(default neurons,pca; neurons with --tiny)")
    p.add_argument("--prune", action="store_true",
                   help="flag the SAE features the OpenMOSS pruning rule rejects (shown as pruned)")
    p.add_argument("--finetune", action="store_true",
                   help="also publish each SAE with its decoder fine-tuned against feature suppression "
                   "(dictionary ID-finetuned)")
    p.add_argument("--preset", default="builtin", choices=("builtin", "smollm2"),
                   help="builtin (default): the built-in model on the Python standard library; smollm2: "
                   "SmolLM2-135M on English text (extra `smollm2`)")
    _add_device(p)
    _add_serve_options(p)


def _add_build(add: _Adder) -> None:
    """The `build` command: the whole offline job from a config file and/or flags."""
    p = add(
        "build",
        cmd_build,
        "Build an atlas: model -> corpus -> activations at the hook points -> SAEs (trained and/or imported) "
        "-> baselines -> evaluation -> precompute -> store. Resumes an interrupted build; reuses finished steps.",
    )
    p.add_argument("config", type=Path, nargs="?", default=None,
                   help="TOML or YAML build config (every field: `saescope build --print-config`, README)")
    p.add_argument("--preset", default=None, choices=("builtin", "builtin-tiny", "smollm2"),
                   help="start from a preset (default: builtin when neither a config file nor --model is given)")
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory")
    p.add_argument("--db", default=None, help="store URL (default: SQLite file ATLAS/atlas.db); e.g. "
                   "postgresql://user@host/db")
    p.add_argument("--model", default=None, help="builtin, a checkpoint or Hugging Face folder, a .gguf file, "
                   "or a transformer_lens pretrained name")
    p.add_argument("--corpus", default=None, help="stdlib, english, a folder of .txt/.md files, a .jsonl or "
                   ".parquet file (column 'text'), or a Hugging Face dataset name")
    p.add_argument("--hook", action="append", default=None, metavar="HOOK",
                   help=f"{HOOK_HELP} (repeatable: one dictionary set per hook point)")
    p.add_argument("--sae", type=Path, action="append", default=None, metavar="DIR",
                   help="SAELens folder to import (repeatable); its cfg.json names the hook point")
    p.add_argument("--architecture", default=None, help="train this SAE architecture on every hook (relu, topk, "
                   "batchtopk, jumprelu, gated)")
    p.add_argument("--d-sae", dest="d_sae", type=int, default=None, help="features of the trained SAE")
    p.add_argument("--k", type=int, default=None, help="active latents per token (k-sparse architectures)")
    p.add_argument("--baselines", default=None, help="comma-separated baselines: neurons, random, pca, ica, each "
                   "also as KIND-relu, and sae-nobias")
    p.add_argument("--tokens", type=int, default=None, help="SAE training tokens per hook")
    p.add_argument("--context-length", dest="context_length", type=int, default=None,
                   help="tokens per context, BOS included (default 128)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"), help="model dtype")
    p.add_argument("--max-norm-ratio", dest="max_norm_ratio", type=float, default=None, metavar="R",
                   help="leave training rows above R times the median norm (massive activations) out of SAE training")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--explainer", default=None, choices=("lookup", "openai", "gguf", "none"),
                   help="explain every feature after publishing with this explainer (default lookup; none skips)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train each hook's SAE sweep on N processes (torch.distributed, gloo): the same weights as one")
    p.add_argument("--print-config", dest="print_config", action="store_true",
                   help="print the resolved config as JSON and stop")
    p.add_argument("--device", default=None, help="auto (CUDA if present, else CPU), cpu, cuda or cuda:N")


def _add_training(add: _Adder) -> None:
    """Commands that train a model or an SAE, or write activations for training."""
    p = add("train-lm", cmd_train_lm, "Train the built-in language model and its tokenizer on the stdlib corpus.")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", type=int, default=None, help="training tokens (default: the built-in budget)")

    p = add(
        "train-sae",
        cmd_train_sae,
        "Train an SAE from an activation matrix file (.safetensors tensor 'activations' [n, d_in], or .npy) "
        "or from a model's activations at a hook point; writes an SAELens-format folder.",
    )
    p.add_argument("--activations", type=Path, help="matrix file: .safetensors (tensor 'activations') or .npy, "
                   "or an activation cache folder written by cache-activations")
    p.add_argument("--model", help="model location (checkpoint folder, HF folder, .gguf or hub name): trains on its "
                   "activations at --hook; with --activations it is only recorded in the SAE's metadata")
    p.add_argument("--hook", default=None, help=f"{HOOK_HELP} (default {DEFAULT_HOOK} with --model; with "
                   "--activations the hook the activations come from, recorded for evaluate/precompute; a cache "
                   "folder records its own)")
    p.add_argument("--max-norm-ratio", dest="max_norm_ratio", type=float, default=10.0, metavar="R",
                   help="leave out of training the activation rows whose norm exceeds R times the median "
                   "(massive activations, e.g. at BOS); counted in the folder's notes (default 10; 0 keeps all)")
    p.add_argument("--eval-contexts", dest="eval_contexts", type=int, default=128, metavar="N",
                   help="with --model: held-out contexts for the final evaluation (default 128; 0 skips it)")
    p.add_argument("--architecture", default="relu",
                   help="a registered SAE architecture (relu, topk, batchtopk, jumprelu, gated, or any module added "
                   "to dictionaries/architectures/); an unknown name is answered with the registered ones")
    p.add_argument("--d-sae", dest="d_sae", type=int, required=True, help="number of features")
    p.add_argument("--k", type=int, default=None, help="active latents per token (k-sparse architectures)")
    p.add_argument("--l1", type=float, default=None, help="sparsity coefficient (L1 for relu and gated, L0 for jumprelu)")
    p.add_argument("--tokens", type=int, default=None,
                   help="training tokens (default: one pass over --activations; 2,000,000 with --model)")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="tokens per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"checkpoint to OUT/checkpoint every N tokens (default {DEFAULT_CHECKPOINT_EVERY:,}); "
                   "rerunning an interrupted command resumes from it")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--out", type=Path, required=True, help="SAELens-format folder to write")
    _add_nproc(p, "train data-parallel: each rank steps on its share of every batch, gradients averaged")
    _add_device(p)

    p = add(
        "cache-activations",
        cmd_cache_activations,
        "Run the model over the corpus once and write hook-point activations to a matrix file or cache "
        "folder for train-sae.",
    )
    p.add_argument("--model", required=True, help="model location (checkpoint folder or hub name)")
    p.add_argument("--hook", default="blocks.0.mlp.hook_post", help=HOOK_HELP)
    p.add_argument("--tokens", type=int, default=1_000_000, help="activation vectors to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True,
                   help=".safetensors or .npy file to write, or a folder: an activation cache of "
                   "memory-mapped shards (train-sae --activations reads either)")
    _add_device(p)


def _add_evaluation(add: _Adder) -> None:
    """Commands that evaluate dictionaries or publish their feature records."""
    p = add("evaluate", cmd_evaluate, "Evaluate an SAE folder on held-out tokens (L0, explained variance, CE...).")
    p.add_argument("--model", required=True, help="model location (checkpoint folder or hub name)")
    p.add_argument("--sae", type=Path, required=True, help="SAELens-format folder")
    p.add_argument("--contexts", type=int, default=256, help="held-out contexts to evaluate on")
    p.add_argument("--json", action="store_true", help="print every metric as JSON (histograms and densities "
                   "included) instead of the headline table; metrics.json in the folder always holds them")
    _add_device(p)

    p = add(
        "precompute",
        cmd_precompute,
        "Precompute every feature record of one or more SAE folders into an atlas store.",
    )
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory")
    p.add_argument("--model", required=True, help="model location (checkpoint folder or hub name)")
    p.add_argument("--sae", type=Path, action="append", required=True, help="SAELens folder (repeatable)")
    p.add_argument("--db", default=None, help="store URL (default: SQLite file ATLAS/atlas.db); "
                   "e.g. postgresql+psycopg://user@host:5432/db")
    p.add_argument("--contexts", type=int, default=2048, help="corpus contexts to scan")
    _add_nproc(p, "each rank streams its share of the contexts; rank 0 merges them exactly and publishes")
    _add_device(p)


def _add_serving(add: _Adder) -> None:
    """Commands that serve an atlas or convert dictionary folders."""
    p = add("serve", cmd_serve, "Serve an existing atlas: REST API under /api/v1 and the dashboard at /.")
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory")
    p.add_argument("--db", default=None, help="store URL (default: SQLite file ATLAS/atlas.db)")
    _add_device(p)
    _add_serve_options(p)

    p = add("import-sae", cmd_import_sae, "Import an SAELens folder (v6 or pre-6.0 cfg.json) as a saescope dictionary.")
    p.add_argument("path", type=Path, help="SAELens folder (v6 or pre-6.0) or an EleutherAI sparsify folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write (SAELens v6)")
    p.add_argument("--model-name", dest="model_name", default=None, help="override/set metadata.model_name")
    p.add_argument("--hook-name", dest="hook_name", default=None, help="set the hook point (sparsify folders need it)")
    p.add_argument("--hook-head-index", dest="hook_head_index", type=int, default=None, help="head for attn.hook_z")

    p = add("export-sae", cmd_export_sae, "Export a saescope dictionary folder as an SAELens v6 folder.")
    p.add_argument("path", type=Path, help="saescope dictionary folder")
    p.add_argument("--out", type=Path, required=True, help="folder to write")


def cmd_export_atlas(args: argparse.Namespace) -> None:
    from saescope.pipeline.portable import export_atlas

    print(export_atlas(args.atlas, args.out, store_url=args.db).summary())


def cmd_import_atlas(args: argparse.Namespace) -> None:
    from saescope.pipeline.portable import import_atlas

    print(import_atlas(args.path, args.atlas, store_url=args.db).summary())


def _add_portable(add: _Adder) -> None:
    """Commands that move an atlas between machines as one file set (store dump, model, dictionaries,
    provenance manifest)."""
    p = add(
        "export-atlas",
        cmd_export_atlas,
        "Write an atlas (store rows, model folder, dictionary folders, manifest with sha256 hashes) as one "
        "file set: a .tar or .tar.gz archive, or a folder.",
    )
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory")
    p.add_argument("--db", default=None, help="store URL (default: SQLite file ATLAS/atlas.db)")
    p.add_argument("--out", type=Path, required=True,
                   help="file set to write: NAME.tar, NAME.tar.gz / NAME.tgz, or else a folder; must not exist")

    p = add(
        "import-atlas",
        cmd_import_atlas,
        "Turn a file set written by export-atlas into an atlas folder: checks every hash, refuses links and "
        "paths leaving the folder, and writes atomically.",
    )
    p.add_argument("path", type=Path, help="archive (.tar, .tar.gz) or folder written by export-atlas")
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory to create (new or empty)")
    p.add_argument("--db", default=None, help="empty store to fill (default: SQLite file ATLAS/atlas.db); "
                   "e.g. postgresql+psycopg://user@host:5432/db")


def cmd_explain(args: argparse.Namespace) -> None:
    from saescope.devices import resolve_device
    from saescope.interpret.config import ExplainConfig, LLMConfig
    from saescope.pipeline.explain import explain_atlas

    llm = LLMConfig(base_url=args.llm_base_url or "", model=args.llm_model or "", gguf_path=args.gguf or "",
                    concurrency=args.concurrency, logprobs=args.logprobs)
    config = ExplainConfig(n_contexts=args.contexts, device=str(resolve_device(args.device)), llm=llm)
    report = explain_atlas(args.atlas, args.db, args.dictionary or None, args.explainer,
                           args.scorer or ["simulation", "detection", "fuzzing"], config)
    print(report.describe())


def _add_explain(add: _Adder) -> None:
    """The `explain` command: automated interpretability of an atlas's features."""
    p = add(
        "explain",
        cmd_explain,
        "Explain every feature of an atlas's dictionaries and score the explanations (simulation, detection, "
        "fuzzing); store them for the dashboard. Resumes an interrupted run; LLM answers are cached.",
    )
    p.add_argument("--atlas", type=Path, required=True, help="atlas directory")
    p.add_argument("--db", default=None, help="store URL (default: SQLite file ATLAS/atlas.db)")
    p.add_argument("--dictionary", action="append", default=None, metavar="ID",
                   help="dictionary to explain (repeat for several; default: every ready dictionary)")
    p.add_argument("--explainer", default="lookup", choices=("lookup", "openai", "gguf"),
                   help="lookup (default): LLM-free characteristic tokens; openai: any OpenAI-compatible endpoint "
                   "($SAESCOPE_LLM_BASE_URL, $SAESCOPE_LLM_MODEL, $SAESCOPE_LLM_API_KEY); gguf: a local GGUF "
                   "model in-process (default SmolLM2-135M-Instruct, extra `smollm2`)")
    p.add_argument("--scorer", action="append", default=None, choices=("simulation", "detection", "fuzzing"),
                   help="scorer to run (repeat for several; default all three)")
    p.add_argument("--contexts", type=int, default=1024, help="corpus contexts scanned for fragments (default 1024)")
    p.add_argument("--llm-base-url", dest="llm_base_url", default=None, help="OpenAI-compatible base URL (…/v1)")
    p.add_argument("--llm-model", dest="llm_model", default=None, help="model name sent to the endpoint")
    p.add_argument("--gguf", default=None, help="GGUF model file for --explainer gguf")
    p.add_argument("--concurrency", type=int, default=4, help="LLM requests in flight at once (default 4)")
    p.add_argument("--logprobs", action="store_true",
                   help="weight simulated activations by the endpoint's log-probabilities where it returns them")
    _add_device(p)


def _add_nproc(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help=f"run as N processes on this machine (torch.distributed, gloo): {what}; the same "
                   "result as one process (default 1; under torchrun leave it out)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saescope",
        description="Train sparse autoencoders on a transformer's activations, precompute every feature, "
        "and browse, probe and steer them in a browser or over a REST API.",
    )
    parser.add_argument("--version", action="version", version=f"saescope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], None], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    for add_commands in (_add_demo, _add_build, _add_training, _add_evaluation, _add_serving, _add_portable,
                         _add_explain):
        add_commands(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc runs again on every rank
    from pydantic import ValidationError

    from saescope.errors import SaescopeError

    try:
        args.handler(args)
    except SaescopeError as exc:
        print(f"saescope {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        print(f"saescope {args.command}: error: invalid option: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # TrainingInterrupted says where the last checkpoint is
        detail = str(exc) or "rerun the same command to resume"
        print(f"saescope {args.command}: interrupted: {detail}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
