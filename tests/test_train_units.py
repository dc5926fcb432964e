"""EMA warm-up, learning-rate schedules, optimizer groups, grids and the metrics file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hourglass.models import create_model
from hourglass.train import (
    EMA,
    MetricsLogger,
    create_optimizer,
    ema_decay,
    lr_factor,
    make_grid,
    read_metrics,
    save_grid,
)
from hourglass.train.images import to_uint8
from hourglass.train.optim import set_lr


@pytest.mark.parametrize(
    ("step", "power", "expected"),
    [
        (0, 0.75, 0.0),  # the first update copies the weights
        (1, 0.75, 1 - 2**-0.75),  # 0.40539644...
        (9, 0.75, 1 - 10**-0.75),  # 0.82216...
        (9999, 0.75, 1 - 10000**-0.75),  # 0.999
        (10**7, 0.75, 0.9999),  # capped at decay_max
        (1, 2 / 3, 1 - 2 ** (-2 / 3)),
        (999, 2 / 3, 0.99),
    ],
)
def test_ema_decay_values(step, power, expected):
    assert ema_decay(step, power, 0.9999) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_ema_decay_known_numbers():
    assert ema_decay(1) == pytest.approx(0.4053964424986395)
    assert ema_decay(9999) == pytest.approx(0.999)
    assert ema_decay(10**6, decay_max=0.999) == 0.999


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"step": -1}, "step must be >= 0"),
    ({"step": 0, "power": 0}, "power must be > 0"),
    ({"step": 0, "decay_max": 1.0}, r"decay_max must lie in \[0, 1\)"),
])
def test_ema_decay_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ema_decay(**kwargs)


def test_ema_update_follows_the_schedule():
    model = torch.nn.Linear(3, 2)
    model.register_buffer("count", torch.tensor(0.0))
    ema = EMA(model, power=0.75)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.count.fill_(5.0)
    assert ema.update(model, 0) == 0.0
    assert torch.equal(ema.model.weight, model.weight) and ema.model.count == 5.0
    with torch.no_grad():
        model.weight.fill_(3.0)
    d = ema.update(model, 1)
    assert torch.allclose(ema.model.weight, torch.full_like(model.weight, d * 1.0 + (1 - d) * 3.0))
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.parametrize(
    ("schedule", "warmup", "step", "expected"),
    [
        ("constant", 0, 0, 1.0),
        ("constant", 0, 1000, 1.0),
        ("linear_warmup", 4, 0, 0.25),
        ("linear_warmup", 4, 1, 0.5),
        ("linear_warmup", 4, 3, 1.0),
        ("linear_warmup", 4, 100, 1.0),
        ("cosine", 0, 0, 1.0),
        ("cosine", 0, 50, 0.5),
        ("cosine", 0, 100, 0.0),
        ("cosine", 10, 4, 0.5),
    ],
)
def test_lr_factor(schedule, warmup, step, expected):
    assert lr_factor(step, schedule, warmup, total_steps=100) == pytest.approx(expected, abs=1e-12)


def test_lr_factor_errors():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'; use one of constant"):
        lr_factor(0, "step")
    with pytest.raises(ValueError, match="needs total_steps"):
        lr_factor(0, "cosine", 0, None)


def test_optimizer_uses_the_model_param_groups():
    model = create_model("hdit_test")
    opt = create_optimizer(model, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.01, mapping_lr_scale=1 / 3)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["main_wd"]["lr"] == pytest.approx(6e-4) and groups["main_wd"]["weight_decay"] == 0.01
    assert groups["main_no_wd"]["weight_decay"] == 0.0
    assert groups["mapping_wd"]["lr"] == pytest.approx(2e-4)
    assert opt.defaults["betas"] == (0.9, 0.95)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    assert set_lr(opt, 0.5) == pytest.approx(3e-4)
    assert groups["mapping_wd"]["lr"] == pytest.approx(1e-4)


def test_grid_layout_and_png(tmp_path):
    images = torch.stack([torch.full((3, 4, 5), v) for v in (-1.0, 0.0, 1.0)])
    grid = make_grid(images, nrow=2, padding=1, pad_value=1.0)
    assert grid.shape == (3, 2 * 5 + 1, 2 * 6 + 1)
    assert grid[:, 1:5, 1:6].eq(-1).all() and grid[:, 1:5, 7:12].eq(0).all() and grid[:, 6:10, 1:6].eq(1).all()
    path = save_grid(images, tmp_path / "g.png", nrow=3, padding=0)
    with Image.open(path) as im:
        pixels = np.asarray(im)
    assert pixels.shape == (4, 15, 3)
    assert pixels[0, 0, 0] == 0 and pixels[0, 5, 0] == 128 and pixels[0, 10, 0] == 255
    assert to_uint8(torch.tensor([[[2.0]]])).item() == 255  # clipped


def test_metrics_drop_records_after_the_resume_step(tmp_path):
    log = MetricsLogger(tmp_path)
    for step in (1, 2, 3, 4):
        log.log(step, loss=0.1 * step)
    log.log(5, loss=math.nan)
    log.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5] and records[-1]["loss"] == "nan"
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line torn by a crash
    resumed = MetricsLogger(tmp_path, resume_step=3)
    resumed.log(4, loss=1.0)
    resumed.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
    assert json.loads(lines[-1])["loss"] == 1.0
    MetricsLogger(tmp_path / "other", enabled=False).log(1, loss=1.0)
    assert not (tmp_path / "other").exists()
