"""What kind of file a path holds, judged from its first bytes (for errors that name it).

``hourglass sample recipe.toml`` or ``hourglass convert k-diffusion model.pth config.json ...`` are
easy mistakes; the commands name what they were given ("a recipe", "a PNG image", "a PyTorch
pickle") instead of failing on its bytes. Nothing here parses more than a small TOML file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAFETENSORS", "file_kind", "read_head"]

#: :func:`file_kind` of a file that starts like a safetensors file (possibly truncated)
SAFETENSORS = "a safetensors file"
_MAX_HEADER = 100 << 20  # safetensors refuses larger headers
_IMAGES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
)
#: kinds that are PyTorch's own formats (pickles, never read by hourglass except with weights_only)
TORCH_KINDS = ("a PyTorch checkpoint (a zip of pickles, as torch.save writes)", "a PyTorch pickle (the legacy torch.save format)")


def read_head(path: Path, n: int = 4096) -> tuple[bytes, int]:
    """The first ``n`` bytes of ``path`` and its size (raises ``OSError``)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        return f.read(n), size


def file_kind(path: str | Path, head: bytes | None = None, size: int | None = None) -> str | None:
    """``"an empty file"``, ``"a PNG image"``, ``"a recipe"``, :data:`SAFETENSORS`, ... or None (unknown bytes).

    Args:
        path: the file (its suffix helps: ``.toml``, ``.pth``, ``.json``).
        head: its first bytes (read when not given; 4 KiB is plenty).
        size: its size in bytes.
    """
    path = Path(path)
    if head is None or size is None:
        head, size = read_head(path)
    if size == 0:
        return "an empty file"
    for magic, what in _IMAGES:
        if head.startswith(magic):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    if head.startswith(b"PK\x03\x04"):
        torch_zip = b"data.pkl" in head or path.suffix in (".pth", ".pt", ".ckpt", ".bin", ".tar")
        return TORCH_KINDS[0] if torch_zip else "a zip archive"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return TORCH_KINDS[1]
    text = _as_text(head)
    if text is not None:
        if path.suffix == ".toml" or _is_recipe(path, size):
            return "a recipe"
        if text.lstrip().startswith(("{", "[")) or path.suffix == ".json":
            return "a JSON file"
        return "a text file"
    if size >= 9:
        n = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 2 <= n <= _MAX_HEADER:
            return SAFETENSORS
    elif path.suffix == ".safetensors":
        return SAFETENSORS  # shorter than any header: truncated
    return None


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:  # the head may end inside a multi-byte character
        return head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None


def _is_recipe(path: Path, size: int) -> bool:
    if size > 1 << 20:
        return False
    from hourglass.recipe import toml

    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError):
        return False
    return isinstance(data, dict) and bool({"model", "data"} & set(data))
