"""Sharded datasets (``webdataset``, ``hf_datasets``), the resumable stream loader and ``hourglass data shards``."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
import torch

from hourglass.cli import main
from hourglass.data import StreamLoader, create_dataloader
from hourglass.registry import DATASET
from tests._shards import image_folder, parquet_files, saved_folder, webdataset_shards

pytest.importorskip("webdataset")


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 PNGs in two class folders, and one file that is not a PNG at all (a corrupt sample)."""
    root = image_folder(tmp_path_factory.mktemp("imgs") / "images", n=12)
    return root


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    """The 12 images as 6 shards of 2."""
    return webdataset_shards(folder, tmp_path_factory.mktemp("tars") / "out", per_shard=2)


def _wds(root: Path, **options) -> object:
    return DATASET.build({"type": "webdataset", "root": str(root), "classes": "cls", **options}, resolution=16)


def test_shards_round_trip_gives_the_folders_images_and_labels(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["data", "shards", str(folder), str(out), "--samples-per-shard", "5", "--no-progress"]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("wrote 12 samples (2 classes) in 3 shards, ") and summary.endswith(f"MB, to {out}")
    reference = DATASET.build({"type": "imagefolder", "root": str(folder), "classes": "subfolders"}, resolution=16)
    for streaming in (True, False):
        ds = _wds(out, streaming=streaming)
        assert len(ds) == 12 and ds.shard_sizes == [5, 5, 2] and ds.class_names == ["cats", "dogs"]
        for i in range(12):
            a, b = reference[(i, 7 + i)], ds[(i, 7 + i)]
            assert torch.equal(a["image"], b["image"]) and int(a["class_cond"]) == int(b["class_cond"]), i
    # without shards.json the shards are scanned: the same samples and class count
    (out / "shards.json").unlink()
    scanned = _wds(out)
    assert scanned.shard_sizes == [5, 5, 2] and scanned.num_classes == 2
    assert torch.equal(scanned[(3, 1)]["image"], reference[(3, 1)]["image"])


def _epoch_keys(ds, rank: int, world: int, workers: int, seed: int = 3) -> list[str]:
    loader = StreamLoader(ds, 1, seed=seed, rank=rank, world_size=world, num_workers=workers)
    keys = []
    for local in range(loader.workers):
        for epoch, _read, _draw, record in loader.slot_records(local, 0, 0):
            if epoch > 0:
                break
            keys.append(record["__key__"])
    return keys


def test_two_ranks_read_disjoint_shards_that_cover_the_epoch(shards):
    ds = _wds(shards)
    everything = sorted(f"{i:08d}" for i in range(12))
    parts = [_epoch_keys(ds, rank, 2, 1) for rank in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == everything
    # whole shards per rank: each key's shard (2 per shard) lies on one rank only
    assert {int(k) // 2 for k in parts[0]}.isdisjoint({int(k) // 2 for k in parts[1]})
    # two ranks x two workers: still disjoint and covering; the order changes with the epoch's seed
    quarters = [_epoch_keys(ds, rank, 2, 2) for rank in range(2)]
    assert sorted(quarters[0] + quarters[1]) == everything
    assert _epoch_keys(ds, 0, 1, 1, seed=3) != _epoch_keys(ds, 0, 1, 1, seed=4)
    with pytest.raises(ValueError, match="6 shard.*cannot be split over 2 rank.*x 4 worker.*at least 8 shards"):
        StreamLoader(ds, 1, rank=0, world_size=2, num_workers=4)


@pytest.mark.parametrize("kind", ["webdataset", "hf_datasets"])
def test_two_workers_yield_the_same_epoch_as_one(kind, shards, tmp_path, monkeypatch):
    if kind == "webdataset":
        ds = _wds(shards)
    else:  # 6 Parquet files of 2 rows: the same shape as the tars
        pytest.importorskip("datasets")
        files = parquet_files(tmp_path / "pq", files=6, rows=2, num_classes=2)
        ds = DATASET.build({"type": "hf_datasets", "path": str(files), "streaming": True}, resolution=16)
    seen = {}
    for workers in (0, 2):
        loader = create_dataloader(ds, 1, seed=5, num_workers=workers)
        assert isinstance(loader, StreamLoader)
        seen[workers] = sorted(_digest(b["image"][0]) for b in itertools.islice(loader.iterate(0), 12))
    assert seen[0] == seen[2] and len(set(seen[0])) == 12


def _batches(loader, start: int, n: int) -> list[dict]:
    return list(itertools.islice(loader.iterate(start), n))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumes_with_the_same_next_batch_after_a_skipped_record(folder, tmp_path, workers):
    damaged = tmp_path / "damaged"
    for path in folder.rglob("*.png"):
        target = damaged / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (damaged / "cats" / "000.png").write_bytes(b"not a png at all")
    ds = _wds(webdataset_shards(damaged, tmp_path / "tars", per_shard=2), hflip=0.5, crop="random")
    make = lambda: create_dataloader(ds, 3, seed=11, num_workers=workers)  # noqa: E731
    reference = make()
    expected = _batches(reference, 0, 9)
    assert reference.load_failures >= 1  # the damaged record was skipped and counted
    for stop in (2, 5):
        first = make()
        _batches(first, 0, stop)
        state = first.state_dict()
        resumed = make()
        resumed.load_state_dict(state)
        for got, want in zip(_batches(resumed, stop, 9 - stop), expected[stop:], strict=True):
            assert torch.equal(got["image"], want["image"]) and torch.equal(got["class_cond"], want["class_cond"])
    # positions derived from the step alone miss the skipped record somewhere: the state is what makes it exact
    later = _batches(make(), 8, 1)[0]
    assert not torch.equal(later["image"], expected[8]["image"])


def test_corrupt_samples_are_skipped_and_counted(folder, tmp_path):
    damaged = tmp_path / "damaged"
    for path in folder.rglob("*.png"):
        target = damaged / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (damaged / "dogs" / "003.png").write_bytes(b"\x89PNG garbage")
    ds = _wds(webdataset_shards(damaged, tmp_path / "tars", per_shard=4), streaming=True)
    loader = create_dataloader(ds, 1, seed=0, num_workers=0)
    with pytest.warns(UserWarning, match="could not be decoded"):
        items = list(itertools.islice(loader.iterate(0), 11))  # one epoch: 12 records, one unreadable
    assert loader.load_failures == 1 and loader.positions[0] == (0, 12)
    assert len({_digest(b["image"][0]) for b in items}) == 11
    indexed = _wds(tmp_path / "tars", streaming=False)
    with pytest.warns(UserWarning, match="could not be decoded"):
        item = indexed[(7, 0)]  # sample 7 (dogs/003.png) is the damaged one: the next readable takes its place
    assert indexed.load_failures == 1 and torch.equal(item["image"], indexed[(8, 0)]["image"])


def test_hf_datasets_parquet_streamed_and_indexed_and_saved(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    files = parquet_files(tmp_path / "pq", files=4, rows=3, num_classes=3)
    spec = {"type": "hf_datasets", "path": str(files), "label_column": "label"}
    streamed = DATASET.build({**spec, "streaming": True}, resolution=16)
    indexed = DATASET.build({**spec, "streaming": False}, resolution=16)
    assert streamed.shard_sizes == [3, 3, 3, 3] and len(indexed) == 12 and streamed.num_classes == 3
    for i in (0, 4, 11):  # the same rows either way
        a, b = streamed[(i, 2)], indexed[(i, 2)]
        assert torch.equal(a["image"], b["image"]) and int(a["class_cond"]) == i % 3
    parts = []  # each record of epoch 0 by its draw, a function of (seed, epoch, shard, record)
    for rank in range(2):
        loader = StreamLoader(streamed, 1, seed=1, rank=rank, world_size=2)
        parts.append({draw for e, _, draw, _ in itertools.islice(loader.slot_records(0, 0, 0), 6) if e == 0})
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 12  # disjoint, and the whole epoch
    reference = _batches(create_dataloader(streamed, 2, seed=1), 0, 8)
    resumed = create_dataloader(streamed, 2, seed=1)
    first = create_dataloader(streamed, 2, seed=1)
    _batches(first, 0, 3)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(_batches(resumed, 3, 5), reference[3:], strict=True))
    saved = DATASET.build(
        {"type": "hf_datasets", "path": str(saved_folder(tmp_path / "saved")), "label_column": "label"}, resolution=16
    )
    assert saved.class_names == ["a", "b"] and len(saved) == 6 and int(saved[(1, 0)]["class_cond"]) == 1


def test_missing_or_unusable_data_is_a_one_line_problem_with_a_hint(tmp_path, shards):
    wds, hf = DATASET.get("webdataset"), DATASET.get("hf_datasets")
    (tmp_path / "empty").mkdir()
    cases = [
        (
            wds.availability_problems(wds.Spec.model_validate({"root": str(tmp_path / "nope")})),
            "does not exist",
            "hourglass data shards",
        ),
        (
            wds.availability_problems(wds.Spec.model_validate({"root": str(tmp_path / "empty")})),
            "holds no .tar shard",
            "hourglass data shards",
        ),
        (
            hf.availability_problems(hf.Spec.model_validate({"path": str(tmp_path / "empty")})),
            "no *.parquet",
            "data.dataset.path",
        ),
    ]
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "shards.json").write_text((shards / "shards.json").read_text())
    cases.append(
        (
            wds.availability_problems(wds.Spec.model_validate({"root": str(partial)})),
            "is missing",
            "write the shards again",
        )
    )
    for problems, message, hint in cases:
        assert len(problems) == 1 and message in problems[0].message and hint in problems[0].hint
        assert "\n" not in str(problems[0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _wds(tmp_path / "nope")


@pytest.mark.parametrize(
    "args,needle",
    [
        (["{missing}", "{out}"], "does not exist"),
        (["{empty}", "{out}"], "no image found"),
        (["{folder}", "{full}"], "already exists and is not an empty folder"),
        (["{folder}", "{inside}"], "lies inside FOLDER"),
        (["{folder}", "{out}", "--samples-per-shard", "0"], "--samples-per-shard must be at least 1"),
    ],
)
def test_data_shards_bad_inputs_are_one_line_errors(args, needle, folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    names = {
        "missing": tmp_path / "missing",
        "out": tmp_path / "out",
        "empty": tmp_path / "empty",
        "folder": folder,
        "full": tmp_path / "full",
        "inside": folder / "shards",
    }
    assert main(["data", "shards", *[a.format(**names) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("hourglass data: error:")
    assert not (tmp_path / "out").exists()


def test_stream_draws_are_a_function_of_seed_epoch_shard_and_record(shards):
    from hourglass.data import mix_seed

    ds = _wds(shards, crop="random", hflip=0.5)
    loader = StreamLoader(ds, 1, seed=9)
    records = list(itertools.islice(loader.slot_records(0, 0, 0), 24))  # two epochs
    draws = [draw for _, _, draw, _ in records]
    assert len(set(draws)) == 24  # every record of every epoch draws its own crop and flip
    order = loader.slot_records(0, 1, 0)  # epoch 1 from its start: the same draws as above
    assert [d for _, _, d, _ in itertools.islice(order, 12)] == draws[12:]
    shard_of = {ds.shard_names[s]: s for s in range(len(ds.shard_names))}
    for epoch, _, draw, record in records[:3]:
        shard = shard_of[Path(record["__url__"]).name]
        j = int(record["__key__"]) - ds._starts[shard]
        assert draw == mix_seed(9, epoch, shard, j)
    batches = list(itertools.islice(loader.iterate(0), 3))  # the loader's items are made with those draws
    for batch, (_, _, draw, record) in zip(batches, records, strict=False):
        assert torch.equal(batch["image"][0], ds.item_from(*ds.decode(record), draw)["image"])


def test_karras_augmentation_streams_and_resumes(shards):
    from hourglass.data import Augmented

    augmented = Augmented(_wds(shards), {"p": 0.5}, seed=3)
    reference = _batches(create_dataloader(augmented, 4, seed=1), 0, 6)
    assert any(b["aug_cond"].abs().sum() > 0 for b in reference)  # the augmentation ran on streamed items
    first = create_dataloader(augmented, 4, seed=1)
    _batches(first, 0, 2)
    resumed = create_dataloader(augmented, 4, seed=1)
    resumed.load_state_dict(first.state_dict())
    for got, want in zip(_batches(resumed, 2, 4), reference[2:], strict=True):
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["aug_cond"], want["aug_cond"])
