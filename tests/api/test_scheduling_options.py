"""The `saescope serve` options for model work reach the ModelWorker; bad values are one clear error."""

from __future__ import annotations

import asyncio


def test_serve_options_reach_the_worker(random_sae_atlas, monkeypatch):
    from saescope import cli
    from saescope.api.app import create_app
    from saescope.api.settings import ApiLimits, ApiSettings

    args = cli.build_parser().parse_args([
        "serve", "--atlas", str(random_sae_atlas.root), "--max-queue", "3", "--max-steer-queue", "2",
        "--max-client-requests", "5", "--max-client-steers", "1", "--request-timeout", "7.5", "--torch-threads", "1",
    ])
    options = cli._model_work_from_args(args)
    settings = ApiSettings(
        store_url=random_sae_atlas.store_url, atlas_root=random_sae_atlas.root, device="cpu",
        limits=ApiLimits(**options["limits"]), torch_threads=options["torch_threads"],
    )
    app = create_app(settings)
    worker = app.state.saescope.worker
    limits = worker.limits
    assert (limits.max_queue, limits.max_steer_queue, limits.max_client_requests, limits.max_client_steers) == (3, 2, 5, 1)
    assert limits.timeout_s == 7.5 and worker.torch_threads == 1

    import torch

    async def threads_on_the_model_thread() -> int:
        return await worker.run(torch.get_num_threads)

    try:
        assert asyncio.run(threads_on_the_model_thread()) == 1
    finally:
        worker.shutdown()


def test_bad_serve_options_are_one_clear_error(random_sae_atlas, capsys):
    from saescope import cli

    code = cli.main(["serve", "--atlas", str(random_sae_atlas.root), "--max-queue", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "max_queue" in err and "Traceback" not in err
