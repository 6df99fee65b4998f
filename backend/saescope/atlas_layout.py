"""Where an atlas keeps its files on disk.

An atlas directory holds everything one `saescope demo`/`precompute` run produces:

    ATLAS/
      model/                    built-in or local model checkpoint (config.json, model.safetensors,
                                tokenizer/)
      dictionaries/NAME/        one SAELens-format folder per dictionary (cfg.json,
                                sae_weights.safetensors, sparsity.safetensors, metrics.json,
                                training.json; pruning.json when pruned)
      atlas.db                  the SQLite store (unless a PostgreSQL URL is given)
      work/                     resumable job state (checkpoints, partial precompute); never read by
                                the server
        saes/                   the checkpoint of an interrupted SAE training sweep (state.safetensors)
        precompute/             the checkpoint of an interrupted precompute
      build_report.json         what the last `saescope demo` build produced and reused

This module only computes paths; it creates nothing and imports no other stage.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class AtlasLayout(BaseModel):
    """Paths inside one atlas directory."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def dictionaries_dir(self) -> Path:
        return self.root / "dictionaries"

    def dictionary_dir(self, name: str) -> Path:
        return self.dictionaries_dir / name

    @property
    def sqlite_path(self) -> Path:
        return self.root / "atlas.db"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def sae_checkpoint_dir(self) -> Path:
        return self.work_dir / "saes"

    def store_url(self, override: str | None = None) -> str:
        """The SQLAlchemy URL of the store: `override` (e.g. a PostgreSQL URL) or the SQLite file."""
        return override or self.sqlite_url
