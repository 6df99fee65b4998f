"""ChunkedBatches over each kind of source: every row once, shuffled, deterministic, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saescope.activations.batches import ChunkedBatches, IterableChunks
from saescope.activations.matrix_file import ActivationMatrix, MatrixChunks, save_activation_matrix
from saescope.errors import ConfigError, FormatError, InputError, NotFoundError


def _source(n_chunks: int = 10, rows: int = 7):
    return [torch.arange(i * rows, (i + 1) * rows, dtype=torch.float32).unsqueeze(1).repeat(1, 3) for i in range(n_chunks)]


def _rows(batches) -> list[float]:
    return torch.cat(list(batches))[:, 0].tolist()


def test_an_iterable_yields_every_row_exactly_once_in_full_batches():
    batches = list(ChunkedBatches(IterableChunks(_source(), chunk_rows=32, seed=0), batch_size=8))
    assert all(b.shape[0] == 8 for b in batches[:-1]) and batches[-1].shape[0] == 70 % 8
    assert sorted(_rows(batches)) == list(range(70))


def test_an_iterable_is_shuffled_deterministically_per_seed():
    a = _rows(ChunkedBatches(IterableChunks(_source(), 32, seed=1), 8))
    b = _rows(ChunkedBatches(IterableChunks(_source(), 32, seed=1), 8))
    c = _rows(ChunkedBatches(IterableChunks(_source(), 32, seed=2), 8))
    assert a == b and a != c and a != list(range(70))
    assert _rows(ChunkedBatches(IterableChunks(_source(), 0, seed=1), 8)) == list(range(70))  # 0: unshuffled


def test_an_iterable_is_read_once_in_order():
    source = IterableChunks(_source(), 32, seed=0)
    source.chunk(0)
    with pytest.raises(ConfigError, match="once, in order"):
        source.chunk(5)


def test_peek_keeps_the_rows_for_the_batches():
    stream = ChunkedBatches(IterableChunks(_source(), 16, seed=0), 8)
    first = stream.peek(20)
    assert torch.equal(torch.cat(list(stream))[:20], first)


def test_bad_rows_raise_input_errors():
    with pytest.raises(InputError, match="NaN"):
        list(ChunkedBatches(IterableChunks([torch.full((4, 3), float("nan"))], 8, seed=0), 2))
    with pytest.raises(InputError, match="d_in=2"):
        list(ChunkedBatches(IterableChunks([torch.ones(4, 3), torch.ones(4, 2)], 2, seed=0), 2))


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_a_matrix_file_covers_each_epoch_in_a_seeded_block_order(tmp_path, suffix):
    path = save_activation_matrix(torch.arange(50, dtype=torch.float32).unsqueeze(1).repeat(1, 2), tmp_path / f"m{suffix}")
    matrix = ActivationMatrix(path)
    assert (matrix.n, matrix.d_in) == (50, 2)
    source = MatrixChunks(matrix, block_rows=8, seed=5, tokens=120)
    assert source.n_chunks == 7 * 3  # 7 blocks an epoch, 3 epochs for 120 rows
    rows = _rows(ChunkedBatches(source, 10))
    for epoch in range(3):
        assert sorted(rows[epoch * 50 : (epoch + 1) * 50]) == list(range(50))
    again = MatrixChunks(ActivationMatrix(path), 8, seed=5, tokens=120)
    assert torch.equal(again.chunk(9), source.chunk(9))  # a pure function of (seed, index)
    assert _rows(ChunkedBatches(MatrixChunks(matrix, 8, seed=6, tokens=120), 10)) != rows


def test_a_stream_resumes_from_its_position(tmp_path):
    path = save_activation_matrix(torch.randn(64, 3), tmp_path / "m.npy")
    source = MatrixChunks(ActivationMatrix(path), 12, seed=0, tokens=64)
    full = list(ChunkedBatches(source, 5))
    stream = ChunkedBatches(source, 5)
    it = iter(stream)
    head = [next(it) for _ in range(4)]
    resumed = ChunkedBatches(source, 5, **stream.position())
    torch.testing.assert_close(torch.cat(head + list(resumed)), torch.cat(full))


def test_matrix_files_in_bfloat16_read_as_float32(tmp_path):
    from safetensors.torch import save_file

    save_file({"activations": torch.ones(4, 3, dtype=torch.bfloat16)}, str(tmp_path / "b.safetensors"))
    rows = ActivationMatrix(tmp_path / "b.safetensors").rows(1, 3)
    assert rows.dtype == torch.float32 and torch.equal(rows, torch.ones(2, 3))


def test_bad_matrix_files_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(NotFoundError, match="none.npy"):
        ActivationMatrix(tmp_path / "none.npy")
    np.save(tmp_path / "vec.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(FormatError, match=r"vec.npy.*matrix"):
        ActivationMatrix(tmp_path / "vec.npy")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(FormatError, match="junk.safetensors"):
        ActivationMatrix(tmp_path / "junk.safetensors")
