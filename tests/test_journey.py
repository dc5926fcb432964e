"""A new user's journey, end to end, through the CLI and the Python API: no output holds a traceback.

Own images in class folders -> ``validate`` -> ``train`` -> Ctrl-C -> ``train`` again (resume) ->
``sample`` with guidance by class name -> image-to-image -> inpainting -> ``eval`` -> the same from
Python. Each CLI step runs as a user runs it (``python -m hourglass`` in a subprocess).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hourglass
from tests._tiny import tiny_recipe_text
from tests.faults.conftest import child_env

pytestmark = pytest.mark.slow

CLASSES = ("cat", "dog")


def _pictures(root: Path) -> None:
    """8 small pictures per class folder: dark squares for 'cat', bright discs for 'dog'."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
            shape = (abs(yy - 12) < 6) & (abs(xx - 12) < 6) if c == 0 else (yy - 12) ** 2 + (xx - 12) ** 2 < 49
            img[shape] = 90 + 150 * c
            Image.fromarray(img).save(root / name / f"{i}.png")


def _run(*args: str, cwd: Path, ok: int = 0) -> str:
    result = subprocess.run([sys.executable, "-m", "hourglass", *args], capture_output=True, text=True,
                            env=child_env(), cwd=cwd, timeout=300)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    assert result.returncode == ok, (args, result.returncode, text)
    return text


def test_a_new_user_journey(tmp_path):
    _pictures(tmp_path / "data")
    recipe = tiny_recipe_text(sample_n=4).replace(
        'dataset = {type = "shapes", size = 64}', 'dataset = {type = "imagefolder", root = "data", classes = "subfolders"}'
    ).replace("num_classes = 6", "num_classes = 2")
    (tmp_path / "mine.toml").write_text(recipe)

    assert "ok   mine.toml" in _run("validate", "mine.toml", cwd=tmp_path)
    text = _run("validate", "mine.toml", "--set", "data.dataset.root=nowhere", cwd=tmp_path, ok=2)
    assert text.count("\n") <= 2 and "folder 'nowhere' does not exist" in text

    # train, stopped with Ctrl-C after a few steps
    proc = subprocess.Popen(
        [sys.executable, "-m", "hourglass", "train", "mine.toml", "--run-dir", "run", "--no-progress",
         "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=tmp_path,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 3/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in out + err, (out, err)
    stopped = int(re.search(r"after step (\d+)", "".join(lines) + out).group(1))
    assert (tmp_path / "run" / "classes.json").read_text().count('"') == 4  # ["cat", "dog"]

    # resume to two more steps
    text = _run("train", "mine.toml", "--run-dir", "run", "--no-progress", "--set", f"train.steps={stopped + 2}",
                cwd=tmp_path)
    assert f"resuming from run/checkpoints/step_{stopped:08d}.safetensors (step {stopped})" in text
    assert f"step {stopped + 1}/{stopped + 2}" in text and "final.png" in text

    # sample by class name with guidance, then edit and inpaint
    assert _run("sample", "run", "--list-classes", cwd=tmp_path).split() == ["0", "cat", "1", "dog"]
    text = _run("sample", "run", "--class", "dog", "--cfg", "2", "--n", "4", "--steps", "2", "--out", "gen",
                cwd=tmp_path)
    assert "wrote 4 images" in text and (tmp_path / "gen" / "grid.png").is_file()
    _run("sample", "run", "--init", "data/cat", "--strength", "0.5", "--n", "2", "--steps", "2", "--out", "edit",
         cwd=tmp_path)
    mask = np.zeros((24, 24), dtype=np.uint8)
    mask[6:18, 6:18] = 255
    Image.fromarray(mask).save(tmp_path / "hole.png")
    _run("sample", "run", "--init", "data/dog/0.png", "--mask", "hole.png", "--steps", "2", "--out", "fill",
         cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "fill").iterdir())[-1] == "grid.png"
    text = _run("sample", "run", "--class", "lion", cwd=tmp_path, ok=2)
    assert "its classes (id name): 0 cat, 1 dog" in text

    # evaluate the samples against the training pictures (the random-projection extractor needs no weights)
    text = _run("eval", "gen", "--ref", "data", "--extractor", "random-projection", "--kid-subset-size", "4",
                cwd=tmp_path)
    assert "FID" in text

    # the same from Python
    pipe = hourglass.load(tmp_path / "run")
    assert pipe.class_names == list(CLASSES) and pipe.step == stopped + 2
    images = pipe.sample(2, classes=["dog"], cfg=2.0, steps=2, seed=0)
    edited = pipe.image_to_image(tmp_path / "data" / "cat", strength=0.5, steps=2, n=2)
    hole = np.zeros(pipe.image_size, dtype=np.float32)
    hole[4:12, 4:12] = 1
    filled = pipe.inpaint(images, torch.from_numpy(hole), steps=2)
    assert images.shape == edited.shape == filled.shape == (2, 3, 16, 16)
    assert torch.equal(filled[..., torch.from_numpy(hole) == 0], images[..., torch.from_numpy(hole) == 0])
