"""A portable atlas: `export-atlas` then `import-atlas` serves exactly what the original served.

The `demo_atlas` fixture's atlas is exported (tar.gz and folder forms), imported into a fresh folder
on SQLite and into PostgreSQL (skipped with a message when no server answers at 127.0.0.1:5432), and
the API answers of the copy are compared with the original's: dictionaries, a feature record, its
page and examples, and live inference. Import refuses unsafe or damaged file sets and leaves nothing
behind when it does.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from saescope.atlas_layout import AtlasLayout
from saescope.cli import main
from saescope.errors import ConfigError, FormatError
from saescope.pipeline.portable import MANIFEST, export_atlas, import_atlas

TEXT = "def add(a, b):\n    return a + b\n"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def archive(demo_atlas: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "atlas.tar.gz"
    export_atlas(demo_atlas.root, out)
    return out


@pytest.fixture(scope="module")
def original_answers(demo_atlas: Any) -> dict[str, Any]:
    with _client(demo_atlas.root, demo_atlas.store_url) as client:
        return _answers(client)


@contextmanager
def _client(root: Path, store_url: str) -> Iterator[Any]:
    from fastapi.testclient import TestClient
    from saescope.api.app import create_app
    from saescope.api.settings import ApiSettings

    settings = ApiSettings(store_url=store_url, atlas_root=root, device="cpu", preload_engine=False, torch_threads=1)
    with TestClient(create_app(settings)) as client:
        yield client


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def _answers(client: Any) -> dict[str, Any]:
    """The API answers compared between the original atlas and its imported copy."""
    api = "/api/v1"
    answers: dict[str, Any] = {
        "models": _ok(client.get(f"{api}/models")),
        "dictionaries": _ok(client.get(f"{api}/dictionaries")),
        "dictionary": _ok(client.get(f"{api}/dictionaries/relu-64")),
        "features": _ok(client.get(f"{api}/dictionaries/relu-64/features?sort=max_activation&order=desc")),
    }
    index = answers["features"]["items"][0]["index"]  # the strongest feature: it has examples
    answers["feature"] = _ok(client.get(f"{api}/dictionaries/relu-64/features/{index}"))
    answers["page"] = _ok(client.get(f"{api}/dictionaries/relu-64/features/{index}/page"))
    answers["examples"] = _ok(client.get(f"{api}/dictionaries/relu-64/features/{index}/examples?group=top"))
    answers["inference"] = _ok(client.post(
        f"{api}/inference/activations", json={"text": TEXT, "dictionaries": ["relu-64", "neurons"], "top_k": 5}
    ))
    answers["feature_inference"] = _ok(client.post(
        f"{api}/inference/feature", json={"text": TEXT, "dictionary": "relu-256", "index": 3}
    ))
    return answers


def _tar_with(path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


def _regular(name: str, payload: bytes = b"x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info


# --------------------------------------------------------------------------- round trips


def test_an_atlas_imported_into_sqlite_serves_what_the_original_served(
    archive: Path, original_answers: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "copy"
    report = import_atlas(archive, target)
    assert sorted(report.dictionaries) == ["neurons", "relu-256", "relu-64"]
    layout = AtlasLayout(root=target)
    with _client(target, layout.sqlite_url) as client:
        assert _answers(client) == original_answers


def test_an_atlas_imported_into_postgresql_serves_what_the_original_served(
    archive: Path, original_answers: dict[str, Any], tmp_path: Path, pg_url: str
) -> None:
    target = tmp_path / "copy"
    import_atlas(archive, target, store_url=pg_url)
    assert not AtlasLayout(root=target).sqlite_path.exists()
    with _client(target, pg_url) as client:
        assert _answers(client) == original_answers


def test_an_atlas_moves_from_postgresql_back_to_sqlite(
    archive: Path, original_answers: dict[str, Any], tmp_path: Path, pg_url: str
) -> None:
    on_pg = tmp_path / "pg"
    import_atlas(archive, on_pg, store_url=pg_url)
    export_atlas(on_pg, tmp_path / "again.tar", store_url=pg_url)
    back = tmp_path / "back"
    import_atlas(tmp_path / "again.tar", back)
    with _client(back, AtlasLayout(root=back).sqlite_url) as client:
        assert _answers(client) == original_answers


def test_a_folder_export_lists_every_file_with_its_hash_and_the_provenance(demo_atlas: Any, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export_atlas(demo_atlas.root, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "saescope-atlas" and manifest["saescope_version"]
    assert manifest["corpora"] and manifest["created_at"]
    assert {d["id"] for d in manifest["dictionaries"]} == {"neurons", "relu-256", "relu-64"}
    assert manifest["models"][0]["location"] == "model" and manifest["models"][0]["included"]
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {MANIFEST}
    assert files == set(manifest["files"])
    assert "store/examples.jsonl" in files and "dictionaries/relu-64/sae_weights.safetensors" in files
    assert manifest["tables"]["features"] == 64 + 256 + 128


def test_the_cli_exports_and_imports_an_atlas(demo_atlas: Any, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "atlas.tar"
    assert main(["export-atlas", "--atlas", str(demo_atlas.root), "--out", str(out)]) == 0
    assert main(["import-atlas", str(out), "--atlas", str(tmp_path / "copy")]) == 0
    assert "imported 3 dictionaries" in capsys.readouterr().out
    assert AtlasLayout(root=tmp_path / "copy").sqlite_path.is_file()


def test_a_model_and_dictionary_outside_the_atlas_travel_inside_the_file_set(
    demo_atlas: Any, original_answers: dict[str, Any], tmp_path: Path
) -> None:
    root, elsewhere = tmp_path / "atlas", tmp_path / "elsewhere"
    shutil.copytree(demo_atlas.root, root)
    elsewhere.mkdir()
    (root / "model").rename(elsewhere / "lm")
    (root / "dictionaries" / "relu-64").rename(elsewhere / "sae")
    with sqlite3.connect(AtlasLayout(root=root).sqlite_path) as db:
        db.execute("UPDATE models SET location = ?, tokenizer = ?", (str(elsewhere / "lm"), str(elsewhere / "lm" / "tokenizer")))
        db.execute("UPDATE dictionaries SET weights_path = ? WHERE id = 'relu-64'", (str(elsewhere / "sae"),))
    export_atlas(root, tmp_path / "out.tar")
    shutil.rmtree(elsewhere)
    target = tmp_path / "copy"
    import_atlas(tmp_path / "out.tar", target)
    with _client(target, AtlasLayout(root=target).sqlite_url) as client:
        answers = _answers(client)
    model = answers.pop("models")[0]
    assert model["location"] == "models/builtin-stdlib-1l"
    assert (target / model["location"] / "tokenizer").is_dir()
    assert (target / "dictionaries" / "relu-64" / "sae_weights.safetensors").is_file()
    assert answers == {k: v for k, v in original_answers.items() if k != "models"}


@pytest.mark.parametrize("command", ["export-atlas", "import-atlas"])
def test_both_commands_have_help(command: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: saescope " + command in capsys.readouterr().out


def test_the_cli_refuses_an_unsafe_archive_with_one_error_line(tmp_path: Path, capsys: Any) -> None:
    archive = _tar_with(tmp_path / "evil.tar", _regular("../escaped.txt"))
    assert main(["import-atlas", str(archive), "--atlas", str(tmp_path / "copy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saescope import-atlas: error: refusing")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["../escaped.txt", "/tmp/absolute.txt", "model/../../escaped.txt"])
def test_import_refuses_members_that_leave_the_atlas(name: str, tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "evil.tar", _regular(name))
    with pytest.raises(ConfigError, match="refusing file set member"):
        import_atlas(archive, tmp_path / "sub" / "copy")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "sub" / "copy").exists()
    assert list((tmp_path / "sub").iterdir()) == []


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
def test_import_refuses_links_and_special_files(kind: bytes, tmp_path: Path) -> None:
    info = tarfile.TarInfo("model/config.json")
    info.type = kind
    info.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path / "evil.tar", info)
    with pytest.raises(ConfigError, match="refusing file set member"):
        import_atlas(archive, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_import_refuses_pickle_files(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "evil.tar", _regular("model/pytorch_model.bin"))
    with pytest.raises(ConfigError, match="pickle"):
        import_atlas(archive, tmp_path / "copy")


def test_import_refuses_a_file_that_does_not_match_its_hash(demo_atlas: Any, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export_atlas(demo_atlas.root, out)
    weights = out / "dictionaries" / "relu-64" / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="sha256"):
        import_atlas(out, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_import_refuses_a_file_the_manifest_does_not_list(demo_atlas: Any, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export_atlas(demo_atlas.root, out)
    (out / "model" / "extra.txt").write_text("not listed")
    with pytest.raises(FormatError, match="does not list"):
        import_atlas(out, tmp_path / "copy")


def test_import_refuses_an_archive_member_the_manifest_does_not_list(demo_atlas: Any, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export_atlas(demo_atlas.root, out)
    archive = tmp_path / "extra.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(out / MANIFEST, arcname=MANIFEST)
        tar.addfile(_regular("model/extra.txt", b"payload"), io.BytesIO(b"payload"))
    with pytest.raises(FormatError, match="does not list"):
        import_atlas(archive, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_import_refuses_an_archive_without_a_manifest_first(tmp_path: Path) -> None:
    archive = _tar_with(tmp_path / "plain.tar", _regular("model/config.json"))
    with pytest.raises(FormatError, match="must start with a manifest.json"):
        import_atlas(archive, tmp_path / "copy")


def test_import_refuses_a_folder_that_is_not_empty(archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        import_atlas(archive, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_import_into_a_database_holding_an_atlas_is_refused_and_leaves_no_folder(
    archive: Path, demo_atlas: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store.db"
    shutil.copyfile(AtlasLayout(root=demo_atlas.root).sqlite_path, store)
    with pytest.raises(ConfigError, match="already holds an atlas"):
        import_atlas(archive, tmp_path / "copy", store_url=f"sqlite:///{store}")
    assert not (tmp_path / "copy").exists()


def test_export_refuses_weights_changed_since_publishing(demo_atlas: Any, tmp_path: Path) -> None:
    root = tmp_path / "atlas"
    shutil.copytree(demo_atlas.root, root)
    weights = root / "dictionaries" / "relu-64" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ConfigError, match="changed since they were published"):
        export_atlas(root, tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()
