"""Draw the HDiT architecture figure of the docs' home page from a real model preset.

The figure is read off the preset's spec (levels, widths, depths, attention kinds, patch size,
mapping network), so it shows what ``hourglass.create_model(PRESET)`` builds. It is committed as
``docs/assets/hdit_architecture.svg``; regenerate it after changing a preset::

    python3 docs/_gen/docgen_architecture.py                      # hdit_ffhq1024 -> docs/assets/hdit_architecture.svg
    python3 docs/_gen/docgen_architecture.py --preset hdit_imagenet256 --out /tmp/in256.svg

Needs matplotlib (the ``plot`` or ``dev`` extra). The SVG is deterministic (no date, fixed ids).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["kind_colour", "level_rows", "draw", "main"]

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 15.0  # data units across the figure
DEFAULT_OUT = ROOT / "docs" / "assets" / "hdit_architecture.svg"

GLOBAL_COLOUR, NO_MIXING_COLOUR = "#f6b98a", "#dddddd"
LOCAL_COLOURS = ("#9cc9f0", "#a8dca0", "#c9b3e6", "#f2d98c")


def kind_colour(kind: str) -> str:
    """Fill colour of an attention kind, from what it declares: warm if one layer connects every
    token, grey if it mixes none, else a cool colour per kernel (so kinds sharing a kernel match)."""
    from hourglass.backends import kernel_names
    from hourglass.registry import ATTENTION

    cls = ATTENTION.get(kind)
    if not cls.mixes_tokens():
        return NO_MIXING_COLOUR
    if cls.connects_all_tokens:
        return GLOBAL_COLOUR
    return LOCAL_COLOURS[kernel_names().index(cls.kernel) % len(LOCAL_COLOURS)]


def level_rows(preset: str) -> tuple[list[dict[str, Any]], Any]:
    """Per-level facts of ``preset``: grid, depth, width, attention kind and label.

    Returns:
        ``(rows, spec)``: one dict per level (outermost first) and the validated model spec.
    """
    from hourglass.models import HDiTSpec, model_spec
    from hourglass.registry import ATTENTION

    spec = model_spec(preset)
    if not isinstance(spec, HDiTSpec):
        raise SystemExit(f"{preset!r} is a {spec.type} preset; pick an hdit preset, e.g. hdit_ffhq1024")
    rows = []
    for i, level in enumerate(spec.levels):
        attention = level.attention
        rows.append({
            "index": i,
            "grid": spec.level_grid(i),
            "depth": level.depth,
            "width": level.width,
            "dropout": level.dropout,
            "kind": attention.type,
            "label": ATTENTION.get(attention.type).label(attention),
        })
    return rows, spec


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, colour: str, size: float = 8.0) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                linewidth=1.0, edgecolor="#333333", facecolor=colour))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size, linespacing=1.35)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], text: str = "",
           offset: tuple[float, float] = (0.0, 0.0), style: str = "-|>", dashed: bool = False,
           ha: str = "center") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={
        "arrowstyle": style, "lw": 1.1, "color": "#333333", "linestyle": "--" if dashed else "-",
        "shrinkA": 0, "shrinkB": 0,
    })
    if text:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha=ha, va="center", fontsize=7.5, color="#222222", linespacing=1.25)


def draw(preset: str, out: Path) -> Path:
    """Draw ``preset``'s hourglass and save it to ``out`` (format from the suffix: .svg or .png)."""
    import matplotlib

    from hourglass.spec import as_pair

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    plt.rcParams.update({
        "svg.fonttype": "none",  # text stays text (searchable, small); fonts no wider than DejaVu Sans
        "svg.hashsalt": "hourglass-docs",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    })
    rows, spec = level_rows(preset)
    n = len(rows)
    row_h, box_h, box_w, step = 1.8, 1.0, 4.0, 0.55
    top = n * row_h + 0.2
    bottom = top - n * row_h - 1.55
    inch = 0.62  # inches per data unit: room for three lines of 8.5 pt text in a box
    fig, ax = plt.subplots(figsize=(WIDTH * inch, (top + 1.4 - bottom) * inch))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(bottom, top + 1.4)
    ax.axis("off")

    (h, w), (ph, pw) = as_pair(spec.input_size), as_pair(spec.patch_size)
    c_in = spec.in_channels
    c_out = spec.out_channels or c_in
    y0 = top - row_h
    # input and output
    _box(ax, 0.3, top + 0.05, box_w, 0.75, f"image {c_in}x{h}x{w}\npatch {ph}x{pw} -> Linear({c_in * ph * pw} -> {rows[0]['width']})",
         "#ffffff")
    _box(ax, WIDTH - 0.3 - box_w, top + 0.05, box_w, 0.75,
         f"RMSNorm -> Linear({rows[0]['width']} -> {c_out * ph * pw})\nunpatch -> {c_out}x{h}x{w}", "#ffffff")

    def text_of(row: dict[str, Any], side: str) -> str:
        gh, gw = row["grid"]
        drop = f", dropout {row['dropout']:g}" if row["dropout"] else ""
        return (f"level {row['index']} {side}: {gh}x{gw} tokens\n"
                f"{row['depth']} layers, width {row['width']}{drop}\n{row['label']} attention")

    lefts = []
    for i, row in enumerate(rows[:-1]):
        y = y0 - i * row_h
        xl = 0.3 + i * step
        xr = WIDTH - 0.3 - box_w - i * step
        colour = kind_colour(row["kind"])
        _box(ax, xl, y, box_w, box_h, text_of(row, "encoder"), colour)
        _box(ax, xr, y, box_w, box_h, text_of(row, "decoder"), colour)
        _arrow(ax, (xl + box_w, y + box_h / 2), (xr, y + box_h / 2),
               "skip: x = skip + f (x - skip), f init 0.5" if i == 0 else "skip (lerp)", offset=(0, 0.14))
        lefts.append((xl, xr, y))
    # innermost level
    inner = rows[-1]
    yi = y0 - (n - 1) * row_h
    wi = WIDTH - 2 * (0.3 + (n - 1) * step)
    wi = max(wi, box_w)
    xi = (WIDTH - wi) / 2
    gh, gw = inner["grid"]
    drop = f", dropout {inner['dropout']:g}" if inner["dropout"] else ""
    _box(ax, xi, yi, wi, box_h,
         f"level {inner['index']} (middle): {gh}x{gw} tokens\n{inner['depth']} layers, width {inner['width']}{drop}\n"
         f"{inner['label']} attention", kind_colour(inner["kind"]))
    # merges and splits
    for i, (xl, xr, y) in enumerate(lefts):
        nxt = rows[i + 1]
        cur = rows[i]
        if i + 1 < n - 1:
            xl2, xr2, y2 = lefts[i + 1]
            down_end, up_start = (xl2 + 0.45, y2 + box_h), (xr2 + box_w - 0.45, y2 + box_h)
        else:
            down_end, up_start = (xi + 0.45, yi + box_h), (xi + wi - 0.45, yi + box_h)
        _arrow(ax, (xl + 0.45, y), down_end, f"TokenMerge 2x2\nLinear(4x{cur['width']} -> {nxt['width']})",
               offset=(0.2, 0.05), ha="left")
        _arrow(ax, up_start, (xr + box_w - 0.45, y), f"TokenSplit 2x2\nLinear({nxt['width']} -> 4x{cur['width']})",
               offset=(-0.2, 0.05), ha="right")
    _arrow(ax, (0.3 + 0.45, top + 0.05), (0.3 + 0.45, y0 + box_h))
    _arrow(ax, (WIDTH - 0.3 - 0.45, y0 + box_h), (WIDTH - 0.3 - 0.45, top + 0.05))
    # mapping network and the layer
    m = spec.mapping
    mapping = (f"mapping network (depth {getattr(m, 'depth', '?')}, width {getattr(m, 'width', '?')})\n"
               "c_noise = ln(sigma)/4 -> Fourier features -> Linear\n"
               "+ class and augmentation embeddings -> GEGLU blocks\n"
               "-> cond: scales every AdaRMSNorm (g = 1 + Linear(cond))")
    yb = bottom + 0.1
    _box(ax, 0.3, yb, 7.0, 1.2, mapping, "#eeeeee", size=7.5)
    layer = ("one layer (pre-norm, residual, no gates):\n"
             "x = x + Out(Attn(AdaRMSNorm(x, cond)))\n"
             "x = x + Down(GEGLU(Up(AdaRMSNorm(x, cond))))\n"
             "cosine-sim attention + 2D axial RoPE")
    _box(ax, WIDTH - 0.3 - 6.6, yb, 6.6, 1.2, layer, "#eeeeee", size=7.5)
    kinds = sorted({r["kind"] for r in rows})
    ax.legend(handles=[Patch(facecolor=kind_colour(k), edgecolor="#333333", label=f"{k} attention")
                       for k in kinds], loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds),
              fontsize=8, frameon=False)
    ax.set_title(f"HDiT preset {preset}: {n} levels, {h}x{w} pixels", fontsize=11, pad=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", metadata={"Date": None} if out.suffix == ".svg" else None)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--preset NAME --out PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="hdit_ffhq1024", help="an hdit model preset (default hdit_ffhq1024)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .svg or .png")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    path = draw(args.preset, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
