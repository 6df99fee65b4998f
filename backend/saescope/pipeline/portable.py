"""A portable atlas: `export_atlas` writes one file set that `import_atlas` turns back into an atlas.

Owns moving an atlas built on one machine to another where it is served. The file set (a folder, or
the same tree in a `.tar` / `.tar.gz` archive):

    manifest.json           provenance: format version, saescope version, schema version, created
                            time, the models, the dictionaries with the sha256 of their weights,
                            the corpora, rows per table, and the sha256 and size of every file
    store/<table>.jsonl     every published row of the store (`store.dump`), paths relative to the
                            atlas root
    model/ ...              each local model folder (or GGUF file); a model outside the atlas goes
                            to models/<id>/
    dictionaries/NAME/      each published dictionary's SAELens folder

Export reads the store from one snapshot and refuses weights that no longer match their published
hash. Import refuses archive members with absolute paths, `..` parts, links or special files and
pickle-format files; never loads or runs anything from the file set (it hashes files and inserts
rows); checks every file against the manifest; and writes atomically: the atlas folder appears
whole by one rename, and the store rows land in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection  # the type of a store snapshot

from saescope import __version__
from saescope.atlas_layout import AtlasLayout
from saescope.errors import ConfigError, FormatError
from saescope.store.database import create_database, parse_store_url
from saescope.store.dump import (
    dumped_tables,
    load_dump,
    read_rows,
    snapshot,
    write_dump,
)
from saescope.store.schema import SCHEMA_VERSION, DictionaryRow, ModelRow

FORMAT = "saescope-atlas"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE_DIR = "store"
WEIGHTS_FILE = "sae_weights.safetensors"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_MANIFEST_BYTES = 64 << 20
COPY_BLOCK = 1 << 20


# --------------------------------------------------------------------------- manifest


class FileEntry(BaseModel):
    """One file of the file set."""

    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    size: int = Field(..., ge=0)


class ModelEntry(BaseModel):
    """A model of the atlas and where the file set holds it."""

    id: str
    source: str = Field(..., description="builtin | local | pretrained")
    location: str = Field(..., description="path in the file set, or the hub name when not included")
    included: bool = Field(..., description="whether the file set holds the model's files")


class DictionaryEntry(BaseModel):
    """A published dictionary and the hash of its weights."""

    id: str
    model_id: str
    hook_name: str
    kind: str
    architecture: str
    d_in: int
    d_sae: int
    folder: str = Field(..., description="its SAELens folder in the file set")
    sae_weights_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")


class AtlasManifest(BaseModel):
    """`manifest.json`: what the file set holds and where it came from."""

    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    saescope_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    created_at: str = Field(..., description="export time, ISO 8601 UTC")
    source_store: str = Field(..., description="back end of the exported store: sqlite or postgresql")
    models: list[ModelEntry]
    dictionaries: list[DictionaryEntry]
    corpora: list[str] = Field(default_factory=list, description="corpora the records were computed on")
    tables: dict[str, int] = Field(..., description="rows per table in store/")
    files: dict[str, FileEntry] = Field(..., description="every file but the manifest, by relative path")


class ExportReport(BaseModel):
    out: Path
    dictionaries: list[str]
    models: list[str]
    tables: dict[str, int]
    n_files: int
    n_bytes: int

    def summary(self) -> str:
        return (f"exported {len(self.dictionaries)} dictionaries ({', '.join(self.dictionaries)}), "
                f"{self.tables.get('features', 0)} features, {self.tables.get('examples', 0)} examples, "
                f"{self.n_files} files ({self.n_bytes / 1e6:.1f} MB) to {self.out}")


class ImportReport(BaseModel):
    atlas: Path
    store: str
    dictionaries: list[str]
    tables: dict[str, int]

    def summary(self) -> str:
        return (f"imported {len(self.dictionaries)} dictionaries ({', '.join(self.dictionaries)}) into "
                f"{self.atlas} (store: {self.store}); serve it with `saescope serve --atlas {self.atlas}`"
                + ("" if self.store == "sqlite" else " --db URL"))


# --------------------------------------------------------------------------- small helpers


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(COPY_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def is_archive_name(path: Path) -> bool:
    return path.name.endswith(ARCHIVE_SUFFIXES)


def safe_relative(name: str) -> PurePosixPath:
    """`name` as a relative path that stays inside its folder; ConfigError for an absolute path,
    a `..` part, a drive or an empty name."""
    if not name or "\\" in name or "\x00" in name:
        raise ConfigError(f"refusing file set member {name!r}: not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise ConfigError(f"refusing file set member {name!r}: absolute path")
    if ".." in path.parts:
        raise ConfigError(f"refusing file set member {name!r}: '..' leaves the atlas")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise ConfigError(f"refusing file set member {name!r}: empty path")
    return PurePosixPath(*parts)


def _refuse_pickle(name: str) -> None:
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ConfigError(
            f"refusing {name}: pickle-format files can run code when loaded; keep weights as .safetensors"
        )


def _walk_files(root: Path) -> Iterator[Path]:
    """Every regular file under `root` (sorted); ConfigError for a link or special file."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                raise ConfigError(f"refusing {path}: links are not copied into or out of an atlas")
            if name in filenames and not path.is_file():
                raise ConfigError(f"refusing {path}: not a regular file")
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _copy_into(src: Path, dst: Path) -> None:
    """Copy a regular file or a folder of regular files to `dst` (no links followed)."""
    if src.is_symlink():
        raise ConfigError(f"refusing {src}: links are not copied into an atlas")
    if src.is_file():
        _refuse_pickle(src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return
    for path in _walk_files(src):
        _refuse_pickle(path.name)
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _staging_dir(final: Path, purpose: str) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{purpose}-", dir=final.parent))


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- export


def _inside(path: Path, root: Path) -> PurePosixPath | None:
    """`path` relative to `root` when it lies inside it (without leaving it through links)."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return PurePosixPath(rel.as_posix()) if rel.parts else None


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")
    return cleaned or "item"


class _Plan(BaseModel):
    """Where each model and dictionary goes in the file set, and the rewritten store paths."""

    copies: list[tuple[Path, str]] = Field(default_factory=list)  # (source, path in the file set)
    model_locations: dict[str, str] = Field(default_factory=dict)  # model id -> stored location
    tokenizers: dict[str, str] = Field(default_factory=dict)  # model id -> stored tokenizer
    dictionary_paths: dict[str, str] = Field(default_factory=dict)  # dictionary id -> weights_path
    models: list[ModelEntry] = Field(default_factory=list)
    dictionaries: list[DictionaryEntry] = Field(default_factory=list)
    corpora: list[str] = Field(default_factory=list)

    def claim(self, source: Path, target: str) -> None:
        if any(target == t or target.startswith(t + "/") or t.startswith(target + "/") for _, t in self.copies):
            raise ConfigError(f"two items of the atlas would share {target} in the file set")
        self.copies.append((source, target))


def _resolved(location: str, root: Path) -> Path:
    path = Path(location)
    return path if path.is_absolute() else root / path


def _plan_model(plan: _Plan, row: dict[str, Any], root: Path) -> None:
    location, model_id = str(row["location"]), str(row["id"])
    source = _resolved(location, root)
    if not source.exists():  # a hub name: the importing machine loads it from the hub or its cache
        plan.models.append(ModelEntry(id=model_id, source=row["source"], location=location, included=False))
        return
    inside = _inside(source, root)
    target = str(inside) if inside is not None else f"models/{_safe_name(model_id)}"
    if inside is None and source.is_file():
        target = f"{target}/{source.name}"
    plan.claim(source, target)
    plan.model_locations[model_id] = target
    tokenizer = _resolved(str(row["tokenizer"]), root)
    within = _inside(tokenizer, source) if tokenizer.exists() and source.is_dir() else None
    if tokenizer.exists() and tokenizer.resolve() == source.resolve():
        plan.tokenizers[model_id] = target
    elif within is not None:
        plan.tokenizers[model_id] = f"{target}/{within}"
    plan.models.append(ModelEntry(id=model_id, source=row["source"], location=target, included=True))


def _plan_dictionary(plan: _Plan, row: dict[str, Any], root: Path) -> None:
    dictionary_id = str(row["id"])
    stored = _resolved(str(row["weights_path"]), root)
    folder = stored.parent if stored.suffix == ".safetensors" else stored
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"dictionary {dictionary_id!r} has no weights file at {weights}")
    expected = (row.get("provenance") or {}).get("sae_weights_sha256")
    current = file_sha256(weights)
    if expected and expected != current:
        raise ConfigError(
            f"the weights of dictionary {dictionary_id!r} changed since they were published; re-publish "
            "it (saescope precompute) before exporting"
        )
    inside = _inside(folder, root)
    target = str(inside) if inside is not None else f"dictionaries/{_safe_name(dictionary_id)}"
    plan.claim(folder, target)
    plan.dictionary_paths[dictionary_id] = target
    corpus = (row.get("provenance") or {}).get("corpus")
    if corpus and corpus not in plan.corpora:
        plan.corpora.append(str(corpus))
    plan.dictionaries.append(DictionaryEntry(
        id=dictionary_id, model_id=row["model_id"], hook_name=row["hook_name"], kind=row["kind"],
        architecture=row["architecture"], d_in=row["d_in"], d_sae=row["d_sae"], folder=target,
        sae_weights_sha256=current,
    ))


def _plan_export(conn: Connection, root: Path) -> _Plan:
    plan = _Plan()
    for row in read_rows(conn, ModelRow.__table__):
        _plan_model(plan, row, root)
    for row in read_rows(conn, DictionaryRow.__table__):
        _plan_dictionary(plan, row, root)
    if not plan.dictionaries:
        raise ConfigError(f"the atlas at {root} has no published dictionary to export")
    return plan


def _rewrite_paths(plan: _Plan) -> Any:
    """The dump transform that stores each path as it lies in the file set."""

    def transform(table: str, row: dict[str, Any]) -> dict[str, Any]:
        if table == ModelRow.__tablename__ and row["id"] in plan.model_locations:
            row = {**row, "location": plan.model_locations[row["id"]]}
            if row["id"] in plan.tokenizers:
                row["tokenizer"] = plan.tokenizers[row["id"]]
        elif table == DictionaryRow.__tablename__:
            row = {**row, "weights_path": plan.dictionary_paths[row["id"]]}
        return row

    return transform


def _check_copied_weights(plan: _Plan, files: dict[str, FileEntry]) -> None:
    """The copied weights are the ones whose hash the plan took (not rewritten in between)."""
    for d in plan.dictionaries:
        entry = files.get(f"{d.folder}/{WEIGHTS_FILE}")
        if entry is None or entry.sha256 != d.sae_weights_sha256:
            raise ConfigError(f"the weights of dictionary {d.id!r} changed while they were exported; export again")


def _file_entries(root: Path) -> dict[str, FileEntry]:
    return {
        path.relative_to(root).as_posix(): FileEntry(sha256=file_sha256(path), size=path.stat().st_size)
        for path in _walk_files(root)
        if path.relative_to(root).as_posix() != MANIFEST
    }


def _tar_info_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _write_tar(staging: Path, out: Path) -> None:
    """`staging`'s files as a tar (gzip when `out` says so), manifest first, written atomically."""
    mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
    fd, partial = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(partial, mode) as tar:
            tar.add(staging / MANIFEST, arcname=MANIFEST, filter=_tar_info_filter)
            for path in _walk_files(staging):
                name = path.relative_to(staging).as_posix()
                if name != MANIFEST:
                    tar.add(path, arcname=name, recursive=False, filter=_tar_info_filter)
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def export_atlas(atlas: Path, out: Path, store_url: str | None = None) -> ExportReport:
    """Write the atlas at `atlas` (its store at `store_url`, default ATLAS/atlas.db) as one file set
    at `out`: a `.tar`, `.tar.gz`/`.tgz` archive, or else a folder. `out` must not exist."""
    layout = AtlasLayout(root=Path(atlas))
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists: choose a new path for the export")
    if store_url is None and not layout.sqlite_path.is_file():
        raise ConfigError(f"no atlas store at {layout.sqlite_path}; pass --db URL when the store is PostgreSQL")
    url = layout.store_url(store_url)
    db = create_database(url)
    staging = _staging_dir(out, "partial")
    try:
        with snapshot(db) as conn:  # the plan and the rows come from one state of the store
            plan = _plan_export(conn, layout.root)
            for source, target in plan.copies:
                _copy_into(source, staging / target)
            tables = write_dump(conn, staging / STORE_DIR, _rewrite_paths(plan))
        files = _file_entries(staging)
        _check_copied_weights(plan, files)
        manifest = AtlasManifest(
            created_at=_utcnow(), source_store=db.dialect.name, models=plan.models,
            dictionaries=plan.dictionaries, corpora=plan.corpora, tables=tables, files=files,
        )
        (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        if is_archive_name(out):
            _write_tar(staging, out)
        else:
            staging.chmod(0o755)
            staging.rename(out)
    finally:
        db.dispose()
        if staging.exists():
            shutil.rmtree(staging)
    return ExportReport(
        out=out, dictionaries=[d.id for d in plan.dictionaries], models=[m.id for m in plan.models],
        tables=tables, n_files=len(files) + 1, n_bytes=sum(f.size for f in files.values()),
    )


# --------------------------------------------------------------------------- import


def _write_stream(source: BinaryIO, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as fh:
        shutil.copyfileobj(source, fh, COPY_BLOCK)


def _check_listed(rel: PurePosixPath, size: int, manifest: AtlasManifest) -> None:
    """Refuse a file the manifest does not list, or lists with another size, before writing it."""
    entry = manifest.files.get(rel.as_posix())
    if entry is None:
        raise FormatError(f"the file set holds files its manifest does not list: {rel.as_posix()}")
    if entry.size != size:
        raise FormatError(f"{rel.as_posix()} does not match the size in the manifest: the file set is damaged")


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, manifest: AtlasManifest | None) -> None:
    """Write one archive member under `dest`: a folder, or a regular file that stays inside it and
    that the manifest lists with its size (the manifest itself comes first)."""
    rel = safe_relative(member.name)
    if member.issym() or member.islnk():
        raise ConfigError(f"refusing file set member {member.name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise ConfigError(f"refusing file set member {member.name!r}: not a regular file or folder")
    target = dest.joinpath(*rel.parts)
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    _refuse_pickle(rel.name)
    if manifest is None and (rel.as_posix() != MANIFEST or member.size > MAX_MANIFEST_BYTES):
        raise FormatError(f"the archive must start with a {MANIFEST} of at most {MAX_MANIFEST_BYTES >> 20} MiB: "
                          "not a saescope atlas export")
    if manifest is not None:
        _check_listed(rel, member.size, manifest)
    if target.exists():
        raise ConfigError(f"refusing file set member {member.name!r}: it appears twice")
    stream = tar.extractfile(member)
    if stream is None:
        raise ConfigError(f"refusing file set member {member.name!r}: no file content")
    with stream:
        _write_stream(stream, target)


def _unpack_tar(archive: Path, dest: Path) -> AtlasManifest:
    """Unpack `archive` into `dest` member by member (never `extractall`): its manifest first, then
    only the folders and regular files it lists; anything else refuses the whole archive."""
    manifest: AtlasManifest | None = None
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _unpack_member(tar, member, dest, manifest)
                if manifest is None and member.isfile():
                    manifest = _read_manifest(dest / MANIFEST)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FormatError(f"{archive} is not a readable, complete tar archive ({exc})") from None
    if manifest is None:
        raise FormatError(f"{archive} holds no {MANIFEST}: not a saescope atlas export")
    return manifest


def _unpack_folder(folder: Path, dest: Path) -> AtlasManifest:
    """Copy the file set folder `folder` into `dest`: its manifest, then the regular files it lists."""
    manifest = _read_manifest(folder / MANIFEST)
    for path in _walk_files(folder):
        rel = safe_relative(path.relative_to(folder).as_posix())
        _refuse_pickle(rel.name)
        if rel.as_posix() != MANIFEST:
            _check_listed(rel, path.stat().st_size, manifest)
        with path.open("rb") as fh:
            _write_stream(fh, dest.joinpath(*rel.parts))
    return manifest


def _read_manifest(path: Path) -> AtlasManifest:
    """The validated manifest at `path` (FormatError when missing, too large, invalid or of another
    format or schema version)."""
    if path.is_symlink() or not path.is_file():
        raise FormatError(f"the file set has no {MANIFEST}: not a saescope atlas export")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise FormatError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = AtlasManifest.model_validate(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise FormatError(f"{MANIFEST} is not a valid atlas manifest ({str(exc).splitlines()[0]})") from None
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise FormatError(f"unsupported file set format {manifest.format} v{manifest.format_version}; this "
                          f"saescope reads {FORMAT} v{FORMAT_VERSION}")
    if manifest.schema_version != SCHEMA_VERSION:
        raise FormatError(f"the file set holds store schema v{manifest.schema_version}; this saescope "
                          f"writes v{SCHEMA_VERSION}")
    return manifest


def verify_files(unpacked: Path, manifest: AtlasManifest) -> None:
    """Every file present is listed with its hash and size, and every listed file is present; each
    dictionary's weights hash matches the file. FormatError names the first difference."""
    present = {p.relative_to(unpacked).as_posix() for p in _walk_files(unpacked)} - {MANIFEST}
    listed = {safe_relative(name).as_posix() for name in manifest.files}
    if present - listed:
        raise FormatError(f"the file set holds files its manifest does not list: {sorted(present - listed)[:5]}")
    if listed - present:
        raise FormatError(f"the file set lacks files its manifest lists: {sorted(listed - present)[:5]}")
    for name, entry in manifest.files.items():
        path = unpacked / safe_relative(name)
        if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
            raise FormatError(f"{name} does not match the sha256 in the manifest: the file set is damaged")
    for d in manifest.dictionaries:
        weights = f"{safe_relative(d.folder).as_posix()}/{WEIGHTS_FILE}"
        entry = manifest.files.get(weights)
        if entry is None or entry.sha256 != d.sae_weights_sha256:
            raise FormatError(f"the weights of dictionary {d.id!r} do not match the manifest's sha256")
    for table in dumped_tables():
        if f"{STORE_DIR}/{table.name}.jsonl" not in listed:
            raise FormatError(f"the file set has no store/{table.name}.jsonl")


def _check_target(atlas: Path) -> None:
    if atlas.is_symlink() or (atlas.exists() and (not atlas.is_dir() or any(atlas.iterdir()))):
        raise ConfigError(f"{atlas} already exists and is not an empty folder: import into a new folder")


def _external_store_ready(store_url: str) -> None:
    """Fail early when the target database is unreachable or already holds an atlas."""
    from saescope.store.database import init_schema
    from saescope.store.dump import store_holds_atlas

    db = create_database(store_url)
    try:
        init_schema(db)
        with db.connect() as conn:
            if store_holds_atlas(conn):
                raise ConfigError("the target store already holds an atlas: import into an empty database")
    finally:
        db.dispose()


def _load_store(store_url: str, dump_dir: Path, tables: dict[str, int]) -> dict[str, int]:
    db = create_database(store_url)
    try:
        return load_dump(db, dump_dir, tables)
    finally:
        db.dispose()


def import_atlas(source: Path, atlas: Path, store_url: str | None = None) -> ImportReport:
    """Turn the file set at `source` (folder or tar archive) into an atlas folder `atlas` (new or
    empty), its store in ATLAS/atlas.db or the empty database at `store_url` (SQLite or PostgreSQL).

    Nothing is visible until everything is checked and written: the folder appears by one rename,
    the rows by one transaction; a failure leaves neither behind."""
    source, atlas = Path(source), Path(atlas)
    if not source.exists():
        raise ConfigError(f"no file set at {source}")
    _check_target(atlas)
    if store_url is not None:
        store_url = parse_store_url(store_url)[0]
        _external_store_ready(store_url)
    staging = _staging_dir(atlas, "importing")
    unpacked, built = staging / "unpacked", staging / "atlas"
    unpacked.mkdir()
    built.mkdir()
    placed = False
    try:
        if source.is_dir():
            manifest = _unpack_folder(source, unpacked)
        else:
            manifest = _unpack_tar(source, unpacked)
        verify_files(unpacked, manifest)
        for entry in manifest.models:
            if entry.included:
                _move(unpacked, built, entry.location)
        for d in manifest.dictionaries:
            _move(unpacked, built, d.folder)
        dump_dir = unpacked / STORE_DIR
        if store_url is None:
            tables = _load_store(AtlasLayout(root=built).sqlite_url, dump_dir, manifest.tables)
        if atlas.exists():
            atlas.rmdir()
        built.rename(atlas)
        placed = True
        if store_url is not None:
            tables = _load_store(store_url, dump_dir, manifest.tables)
    except BaseException:
        if placed:
            shutil.rmtree(atlas, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shown = "sqlite" if store_url is None else parse_store_url(store_url)[1].render_as_string(hide_password=True)
    return ImportReport(atlas=atlas, store=shown, dictionaries=[d.id for d in manifest.dictionaries], tables=tables)


def _move(unpacked: Path, built: Path, location: str) -> None:
    """Move the file or folder at `location` of the unpacked file set into the atlas being built."""
    rel = safe_relative(location)
    source, target = unpacked.joinpath(*rel.parts), built.joinpath(*rel.parts)
    if not source.exists():
        raise FormatError(f"the file set lacks {location}, which its manifest names")
    if target.exists():
        return  # listed twice in the manifest: already in place
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
