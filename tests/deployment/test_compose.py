"""docker-compose.yml and the Dockerfile start: every service's command line runs through saescope's own
argument parser after /bin/sh splits it, every path it names exists in the image, and the services
wait on each other's health and success.

The compose file is read with PyYAML and interpolated as `docker compose` does with an empty host
environment (the defaults a fresh clone gets). A command given as `sh -c SCRIPT` runs through the
real /bin/sh with the service's environment and a stand-in `saescope` first on PATH that records its
arguments, so a script that sh splits into several commands (a folded line break) fails here as it
fails in the container. `docker compose config` runs where a Docker client with compose exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SAESCOPE_SERVICES = ("job", "api")

# ---------------------------------------------------------------------------------------- helpers

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's interpolation of every string in `value`: `$$` -> `$`, `${X}`, `${X:-default}`, `$X`."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group("braced") or m.group("plain")
            default = m.group("default")
            return env.get(name) or (default if default is not None else "")

        return _VARIABLE.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def compose(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def service_environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_layout() -> dict[PurePosixPath, Path]:
    """Each path the Dockerfile's COPY lines create in the image -> its source in the repository."""
    layout: dict[PurePosixPath, Path] = {}
    workdir = PurePosixPath("/")
    for word, rest in dockerfile_instructions():
        if word == "WORKDIR":
            workdir = workdir / rest
        elif word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            *sources, dest = parts
            dest_path = workdir / dest
            for src in sources:
                source = REPO / src
                assert source.exists(), f"Dockerfile COPY names {src}, which is not in the repository"
                target = dest_path / source.name if (dest.endswith("/") or len(sources) > 1) else dest_path
                layout[target] = source
    return layout


def mounts(service: dict) -> dict[PurePosixPath, str]:
    """Container path -> volume name or host path of each of the service's volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        out[PurePosixPath(target)] = source
    return out


def exists_in_container(path: PurePosixPath, service: dict) -> bool:
    """Whether `path` is in the image (a COPY target or inside one) or under one of the service's mounts."""
    for target, source in image_layout().items():
        if path == target or (source.is_dir() and target in path.parents and (source / path.relative_to(target)).exists()):
            return True
    for target, source in mounts(service).items():
        if path == target or target in path.parents:
            if source.startswith((".", "/")):  # a bind mount: the host file must exist
                host = (REPO / source).resolve() if source.startswith(".") else Path(source)
                return (host / path.relative_to(target)).exists() if path != target else host.exists()
            return True  # a named volume: the service fills or reads it
    return False


def run_through_sh(command: list[str], env: dict[str, str], tmp_path: Path) -> list[list[str]]:
    """The saescope argument lists that `command` (an exec-form list, e.g. ["sh", "-c", SCRIPT]) runs,
    with a stand-in `saescope` first on PATH; fails when the shell exits non-zero (127: a line that
    became a command of its own)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "argv.jsonl"
    log.unlink(missing_ok=True)
    stand_in = bin_dir / "saescope"
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['ARGV_LOG'], 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stand_in.chmod(0o755)
    shell = shutil.which(command[0]) or command[0]
    result = subprocess.run(
        [shell, *command[1:]], env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_LOG": str(log)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"{command!r} exits {result.returncode} under sh: {result.stderr.strip()}"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def saescope_argv(service: dict, tmp_path: Path) -> list[str]:
    """The one saescope argument list the service's command runs."""
    command = service["command"]
    if isinstance(command, str):  # compose splits a string command itself, without a shell
        command = shlex.split(command)
    if command[0] == "saescope":
        return command[1:]
    assert command[:2] == ["sh", "-c"], f"unexpected command form {command!r}"
    runs = run_through_sh(command, service_environment(service), tmp_path)
    assert len(runs) == 1, f"{command!r} runs saescope {len(runs)} times: {runs!r}"
    return runs[0]


def parse(argv: list[str]):
    from saescope.cli import build_parser

    return build_parser().parse_args(argv)


def named_paths(args) -> list[PurePosixPath]:
    """Every absolute path among the parsed options (Path values, or strings starting with /)."""
    out = []
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (Path, str)) and str(item).startswith("/"):
                out.append(PurePosixPath(str(item)))
    return out


# ---------------------------------------------------------------------------------------- the compose file


def test_the_services_are_postgres_the_build_job_and_the_api():
    services = compose()["services"]
    assert set(services) == {"postgres", "job", "api"}
    assert services["postgres"]["image"].startswith("postgres:")
    for name in SAESCOPE_SERVICES:
        assert services[name]["build"] == "."


def test_postgres_keeps_its_data_in_a_volume_and_reports_health():
    doc = compose()
    pg = doc["services"]["postgres"]
    volume = mounts(pg)[PurePosixPath("/var/lib/postgresql/data")]
    assert volume in doc["volumes"]
    test = pg["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test[1:])


def test_the_job_builds_straight_into_postgresql_once_the_database_is_healthy(tmp_path):
    job = compose()["services"]["job"]
    assert job["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert job["restart"] == "no"
    argv = saescope_argv(job, tmp_path)
    assert argv[0] == "build" and "demo" not in argv and "precompute" not in argv
    db = argv[argv.index("--db") + 1]
    assert db == service_environment(job)["SAESCOPE_DB_URL"] and db.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in db


def test_the_api_waits_for_the_job_to_succeed_and_restarts(tmp_path):
    api = compose()["services"]["api"]
    assert api["depends_on"]["job"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["restart"] in ("always", "unless-stopped", "on-failure")
    args = parse(saescope_argv(api, tmp_path))
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000
    assert args.db == service_environment(api)["SAESCOPE_DB_URL"]
    published = [p.split(":") for p in api["ports"]]
    assert ["8000", "8000"] in published


def test_the_api_serves_several_workers_taken_from_the_environment(tmp_path, monkeypatch):
    from saescope.cli import _workers_from_args

    api = compose({"SAESCOPE_WORKERS": "3"})["services"]["api"]
    args = parse(saescope_argv(api, tmp_path))
    monkeypatch.setenv("SAESCOPE_WORKERS", service_environment(api)["SAESCOPE_WORKERS"])
    assert _workers_from_args(args) == 3
    monkeypatch.setenv("SAESCOPE_WORKERS", service_environment(compose()["services"]["api"])["SAESCOPE_WORKERS"])
    assert _workers_from_args(args) == 2  # the default


def test_the_api_health_check_asks_the_health_route_on_the_served_port():
    api = compose()["services"]["api"]
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"  # python:3.11-slim has no curl
    assert "http://127.0.0.1:8000/api/v1/health" in test[-1]
    assert api["healthcheck"]["start_period"]


def test_a_postgres_password_from_the_environment_reaches_both_sides():
    services = compose({"POSTGRES_PASSWORD": "pw-from-env"})["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-env"
    for name in SAESCOPE_SERVICES:
        assert ":pw-from-env@postgres:" in service_environment(services[name])["SAESCOPE_DB_URL"]


@pytest.mark.parametrize("name", SAESCOPE_SERVICES)
def test_every_path_a_command_names_exists_in_the_image_or_its_mounts(name, tmp_path):
    service = compose()["services"][name]
    paths = named_paths(parse(saescope_argv(service, tmp_path)))
    assert paths, f"{name}: expected the command to name its atlas folder"
    missing = [str(p) for p in paths if not exists_in_container(p, service)]
    assert not missing, f"{name} names {missing}, which neither the image nor the service's mounts hold"


def test_the_job_command_parses_through_the_saescope_parser(tmp_path):
    args = parse(saescope_argv(compose()["services"]["job"], tmp_path))
    assert args.command == "build" and args.preset is None  # the config file alone says what to build
    assert str(args.config) == "/config/atlas.toml" and str(args.atlas) == "/data/atlas"


def test_the_mounted_build_config_is_the_shipped_example():
    job = compose()["services"]["job"]
    config = mounts(job)[PurePosixPath("/config/atlas.toml")]
    assert (REPO / config).resolve() == (REPO / "docker" / "atlas.toml")
    assert image_layout()[PurePosixPath("/config/atlas.toml")] == REPO / "docker" / "atlas.toml"


def test_the_example_build_config_is_a_valid_build_config():
    import tomllib

    path = REPO / "docker" / "atlas.toml"
    values = tomllib.loads(path.read_text())
    assert values["model"]["location"] == "builtin" and values["corpus"]["source"] == "stdlib"
    from saescope.pipeline.build_config import load_build_config, preset

    config = load_build_config(path)
    assert [h.name for h in config.hooks] == ["blocks.0.mlp.hook_post"]
    assert sorted(s.architecture for s in config.saes) == ["relu", "topk"]
    assert config.baselines == ["neurons", "pca"]
    assert config == preset("builtin")  # the demo's atlas, as README says


def test_a_folded_multi_line_command_is_caught(tmp_path):
    """The regression of issue 17: `command: >` with `sh -c "...` over several lines."""
    broken = yaml.safe_load('command: >\n  sh -c "saescope serve --atlas /a\n         --db sqlite:///x"\n')["command"]
    with pytest.raises(AssertionError, match="exits 127"):
        saescope_argv({"command": broken, "environment": {}}, tmp_path)


# ---------------------------------------------------------------------------------------- the Dockerfile


def test_the_image_installs_with_the_constraints_file():
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN" and "pip install" in rest]
    assert len(runs) == 1
    assert "-c constraints.txt" in runs[0] and "-e ." in runs[0]  # editable: the server finds /app/frontend
    layout = image_layout()
    for needed in ("constraints.txt", "pyproject.toml", "backend", "frontend"):
        assert PurePosixPath("/app") / needed in layout
    from_line = next(rest for word, rest in dockerfile_instructions() if word == "FROM")
    assert from_line == "python:3.11-slim"


def test_the_image_default_command_parses_and_names_its_volume():
    cmd = json.loads(next(rest for word, rest in dockerfile_instructions() if word == "CMD"))
    assert cmd[0] == "saescope"
    args = parse(cmd[1:])
    assert args.command == "demo" and str(args.atlas) == "/data/atlas" and args.host == "0.0.0.0"


def test_the_build_context_leaves_out_the_virtual_environment_and_git():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# ---------------------------------------------------------------------------------------- docker compose config


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin (`docker compose version` fails)")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True, text=True, cwd=REPO, env={k: v for k, v in os.environ.items() if not k.startswith("SAESCOPE_")},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout.replace("$$", "$"))  # some compose versions print $$ escaped
    ours = compose()
    for name in SAESCOPE_SERVICES:
        assert resolved["services"][name]["command"] == ours["services"][name]["command"]
        assert resolved["services"][name]["environment"] == service_environment(ours["services"][name])
