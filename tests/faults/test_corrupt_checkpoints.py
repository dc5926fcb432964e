"""Truncated or corrupted checkpoints: a clear error naming the file; --run-dir falls back to the last good one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hourglass.recipe import loads_recipe
from hourglass.train import train
from hourglass.train.checkpoint import CheckpointError, list_checkpoints, read_checkpoint

from .conftest import TINY_RECIPE, assert_clean_error, run_cli


def _truncate_half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _truncate_header(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:5])


def _flip_tensor_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-100] ^= 0xFF
    p.write_bytes(bytes(raw))


def _flip_header_byte(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[12] = ord("\x00")
    p.write_bytes(bytes(raw))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _garbage(p: Path) -> None:
    p.write_bytes(b"\xff" * 4096)


DAMAGE = [_truncate_half, _truncate_header, _flip_tensor_byte, _flip_header_byte, _empty, _garbage]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory with checkpoints of steps 1, 2, 3."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(loads_recipe(TINY_RECIPE, ["train.steps=3"]), run_dir, report=lambda m: None, progress=False)
    return run_dir


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_damaged_file_gives_an_error_naming_it(trained, tmp_path, damage):
    run_dir = _copy_run(trained, tmp_path / "run")
    newest = list_checkpoints(run_dir)[-1][1]
    damage(newest)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(newest)
    assert str(newest) in str(info.value)
    assert any(w in str(info.value) for w in ("truncated", "corrupt", "not an hourglass")), str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate_half, _flip_tensor_byte], ids=lambda f: f.__name__.strip("_"))
def test_cli_resumes_from_the_previous_good_checkpoint(trained, tmp_path, damage):
    run_dir = _copy_run(trained, tmp_path / "run")
    newest = list_checkpoints(run_dir)[-1][1]
    damage(newest)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    proc = run_cli("train", str(recipe), "--run-dir", str(run_dir), "--no-progress", "--set", "train.steps=4")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"skipping checkpoint {newest.name}" in proc.stdout, proc.stdout
    assert "step_00000002.safetensors (step 2)" in proc.stdout, proc.stdout
    assert read_checkpoint(list_checkpoints(run_dir)[-1][1]).step == 4


@pytest.mark.slow
def test_sample_refuses_a_damaged_file_naming_it(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path / "run")
    newest = list_checkpoints(run_dir)[-1][1]
    _truncate_half(newest)
    proc = run_cli("sample", str(newest), "--n", "1", "--steps", "1", "--out", str(tmp_path / "out"))
    assert_clean_error(proc, newest.name, "truncated")
    assert not (tmp_path / "out").exists()
