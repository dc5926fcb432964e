"""Resumable sampling in parts: ``--npz`` in the ADM layout, resuming after a crash or ``kill -9``, refusing
other settings, 2 gloo processes (torchrun) writing the same arrays as 1, and ``hourglass eval`` reading .npz."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.cli import main
from hourglass.pipeline import parts as parts_module
from hourglass.train import train
from tests.test_train_loop import REPO, one_thread, quiet, tiny_recipe  # noqa: F401 (fixture)

COMMON = ["--steps", "2", "--seed", "3", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("run")
    train(tiny_recipe("train.steps=2", "train.checkpoint_every=2"), path, report=quiet)
    torch.set_num_threads(threads)
    return path


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _crash_after(monkeypatch, parts: int) -> None:
    """Make the sampler fail (as a killed process would stop) after writing ``parts`` parts."""
    real = parts_module.PartsFolder.write
    written = []

    def write(self, *args, **kwargs):
        if len(written) == parts:
            raise KeyboardInterrupt("stopped")
        written.append(args[:2])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(parts_module.PartsFolder, "write", write)


def test_npz_has_the_adm_layout_in_index_order(run_dir, tmp_path, capsys):
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run_dir), "--n", "7", "--batch-size", "3", "--npz", str(npz), *COMMON]) == 0
    assert "arr_0: 7x16x16x3 uint8, arr_1: labels" in capsys.readouterr().out
    data = _arrays(npz)
    assert sorted(data) == ["arr_0", "arr_1"]
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (7, 16, 16, 3)
    assert data["arr_1"].dtype == np.int64 and data["arr_1"].tolist() == [0, 1, 2, 3, 4, 5, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # the parts are removed; no PNGs without --out
    # the same images as PNGs, and image i does not depend on the batch it was drawn in
    out = tmp_path / "png"
    assert main(["sample", str(run_dir), "--n", "7", "--batch-size", "3", "--out", str(out), *COMMON]) == 0
    pngs = np.stack([np.asarray(Image.open(out / f"{i:06d}.png").convert("RGB")) for i in range(7)])
    assert np.array_equal(pngs, data["arr_0"])
    assert not (out / ".parts").exists()
    one = tmp_path / "one.npz"
    assert main(["sample", str(run_dir), "--n", "1", "--batch-size", "3", "--npz", str(one), *COMMON[:-3],
                 "--seed", "6", "--class", "3", "--no-progress"]) == 0
    assert np.abs(_arrays(one)["arr_0"][0].astype(int) - data["arr_0"][3].astype(int)).max() <= 1


def test_a_stopped_run_resumes_and_other_settings_are_refused(run_dir, tmp_path, monkeypatch, capsys):
    args = ["sample", str(run_dir), "--n", "8", "--batch-size", "2", *COMMON]
    assert main([*args, "--npz", str(tmp_path / "whole.npz")]) == 0
    npz = tmp_path / "r.npz"
    with monkeypatch.context() as mp:
        _crash_after(mp, 2)
        assert main([*args, "--npz", str(npz)]) != 0  # Ctrl-C: "interrupted"
    folder = tmp_path / "r.npz.parts"
    assert sorted(p.name for p in folder.iterdir()) == ["0000000-0000002.npz", "0000002-0000004.npz", "settings.json"]
    (folder / ".0000004-0000006.npz.123.tmp").write_bytes(b"half a file")  # a temporary file left by a kill
    capsys.readouterr()
    for changed in (["--steps", "3"], ["--seed", "4"], ["--class", "1"], ["--n", "9"]):
        assert main(["sample", str(run_dir), "--batch-size", "2", *(["--n", "8"] if changed[0] != "--n" else []),
                     *COMMON, *changed, "--npz", str(npz)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "other settings" in err and "delete the folder" in err
        assert changed[0].strip("-") in err
    drawn = []
    real = parts_module.PartsFolder.write
    monkeypatch.setattr(parts_module.PartsFolder, "write", lambda self, *a, **k: drawn.append(a[:2]) or real(self, *a, **k))
    assert main([*args[:-len(COMMON)], "--batch-size", "4", *COMMON, "--npz", str(npz)]) == 0  # another batch size
    assert drawn == [(4, 6), (6, 8)]  # only the missing chunks, in the recorded chunks of 2
    text = capsys.readouterr().out
    assert "4 of 8 images are done" in text and "batch size 2" in text
    whole, resumed = _arrays(tmp_path / "whole.npz"), _arrays(npz)
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)
    assert not folder.exists() and not np.array_equal(whole["arr_0"][0], whole["arr_0"][1])


def test_png_output_resumes_without_redrawing_finished_chunks(run_dir, tmp_path, monkeypatch):
    args = ["sample", str(run_dir), "--n", "5", "--batch-size", "2", *COMMON]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "png"
    with monkeypatch.context() as mp:
        _crash_after(mp, 1)
        assert main([*args, "--out", str(out)]) != 0
    assert sorted(p.name for p in (out / ".parts").iterdir()) == ["0000000-0000002.done", "settings.json"]
    Image.new("RGB", (16, 16)).save(out / "000000.png")  # black: a finished chunk is not drawn again
    assert main([*args, "--out", str(out)]) == 0
    assert np.asarray(Image.open(out / "000000.png")).max() == 0
    for name in [f"{i:06d}.png" for i in range(1, 5)]:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (out / ".parts").exists()


def test_eval_reads_npz_files(run_dir, tmp_path, capsys):
    from hourglass.evaluation import EvaluationError, FolderImages, NpzImages, image_source

    npz, out = tmp_path / "s.npz", tmp_path / "png"
    assert main(["sample", str(run_dir), "--n", "6", "--batch-size", "4", "--npz", str(npz), "--out", str(out),
                 *COMMON]) == 0
    source = image_source(npz, what="generated")
    assert isinstance(source, NpzImages) and len(source) == 6
    batches = list(source.batches(4))
    assert [b.shape for b in batches] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    assert torch.equal(torch.cat(batches), torch.cat(list(FolderImages(out).batches(6))))
    grey = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)  # an ADM reference batch
    np.savez_compressed(tmp_path / "ref.npz", arr_0=grey, mu=np.zeros(4), sigma=np.eye(4))
    (first,) = NpzImages(tmp_path / "ref.npz", n=1).batches(8)
    assert first.shape == (1, 3, 8, 8) and torch.equal(first[0, 2], torch.from_numpy(grey[0, :, :, 0]))
    np.savez(tmp_path / "nchw.npz", arr_0=np.zeros((2, 3, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "stats.npz", mu=np.zeros(4))
    for name, message in (("nchw.npz", "channels last"), ("stats.npz", "no arr_0"), ("none.npz", "does not exist")):
        with pytest.raises(EvaluationError, match=message):
            image_source(tmp_path / name)
    with pytest.raises(EvaluationError, match="holds 3 images but 4"):
        NpzImages(tmp_path / "ref.npz", n=4)
    fast = ["--extractor", "random-projection", "--no-cache", "--kid-subsets", "2", "--kid-subset-size", "3", "--json"]
    capsys.readouterr()
    assert main(["eval", str(npz), "--ref", str(out), *fast]) == 0
    assert abs(json.loads(capsys.readouterr().out)["fid"]) < 1e-3  # the same pixels
    assert main(["eval", str(out), "--ref", str(npz), "--n", "5", *fast]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_generated"] == 5 and result["n_reference"] == 6


# -- several processes and kill -9 (subprocesses) ---------------------------------------------------------------
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HOURGLASS_NO_PROGRESS": "1"}


_LOGGING_RUNNER = """import os, sys
from hourglass.cli import main
from hourglass.pipeline.parts import PartsFolder

real = PartsFolder.write

def write(self, start, stop, *args, **kwargs):
    with open(os.path.join(os.environ["PARTS_LOG"], os.environ["RANK"]), "a") as f:
        f.write(f"{start}\\n")
    return real(self, start, stop, *args, **kwargs)

PartsFolder.write = write
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(*args: str, runner: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    script = ["-m", "hourglass"] if runner is None else [runner]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *script, "sample", *args, "--device", "cpu"]
    return subprocess.run(command, env={**_env(), **(env or {})}, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_two_gloo_processes_write_the_same_npz_as_one(run_dir, tmp_path, one_thread):  # noqa: F811
    args = ["--batch-size", "3", *COMMON]
    assert main(["sample", str(run_dir), "--n", "11", *args, "--npz", str(tmp_path / "one.npz")]) == 0
    (tmp_path / "runner.py").write_text(_LOGGING_RUNNER)  # `-m hourglass`, logging which rank drew which chunk
    (tmp_path / "log").mkdir()
    proc = _torchrun(str(run_dir), "--num-images", "11", *args, "--npz", str(tmp_path / "two.npz"),
                     "--out", str(tmp_path / "png"), runner=str(tmp_path / "runner.py"),
                     env={"PARTS_LOG": str(tmp_path / "log")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("sampling 11 images") == 1 and "2 processes" in proc.stdout  # rank 0 reports
    one, two = _arrays(tmp_path / "one.npz"), _arrays(tmp_path / "two.npz")
    assert sorted(one) == sorted(two) == ["arr_0", "arr_1"]
    assert all(np.array_equal(one[k], two[k]) for k in one)
    drawn = {r: (tmp_path / "log" / r).read_text().split() for r in ("0", "1")}
    assert drawn == {"0": ["0", "6"], "1": ["3", "9"]}  # chunks of 3, strided over the ranks, each drawn once
    assert len(list((tmp_path / "png").glob("0*.png"))) == 11 and not (tmp_path / "two.npz.parts").exists()


def test_a_sampler_killed_at_a_random_moment_resumes_to_the_same_arrays(run_dir, tmp_path, one_thread):  # noqa: F811
    args = ["--num-images", "60", "--batch-size", "2", "--steps", "6", "--seed", "3", "--no-progress"]
    assert main(["sample", str(run_dir), *args, "--npz", str(tmp_path / "whole.npz")]) == 0
    npz, folder = tmp_path / "k.npz", tmp_path / "k.npz.parts"
    proc = subprocess.Popen([sys.executable, "-m", "hourglass", "sample", str(run_dir), *args, "--npz", str(npz)],
                            env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(p.suffix == ".npz" for p in folder.glob("*.npz")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.uniform(0, 0.5))
        assert proc.poll() is None, "the sampler finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(list(folder.glob("0*.npz")))
    assert 1 <= done < 30 and not npz.exists()
    resumed = _torchrun(str(run_dir), *args, "--npz", str(npz))  # resumed by 2 processes
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{2 * done} of 60 images are done" in resumed.stdout
    whole, again = _arrays(tmp_path / "whole.npz"), _arrays(npz)
    assert all(np.array_equal(whole[k], again[k]) for k in whole)
