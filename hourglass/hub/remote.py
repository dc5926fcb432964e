"""Hub ids, downloads into the Hub cache and uploads, all through ``huggingface_hub`` (no HTTP of our own).

Hub ids: ``"hf-hub:owner/name"``, or ``"owner/name"`` when no local path of that name exists; a
revision (branch, tag or commit) as ``revision=`` or ``"owner/name@revision"``. Files are fetched with
``huggingface_hub.hf_hub_download`` into its cache (``HF_HUB_CACHE``), only those needed (the EMA
weights or the raw ones, not both), and ``HF_HUB_OFFLINE=1`` loads from that cache without a network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hourglass.hub.layout import (
    CLASSES_FILE,
    CONFIG_FILE,
    EMA_FILE,
    PRETRAINED_FORMAT,
    RECIPE_FILE,
    WEIGHTS_FILE,
    PretrainedError,
    _read_config,
    is_pretrained_folder,
)

__all__ = ["parse_hub_id", "download_pretrained", "resolve_source", "push_to_hub"]

_HUB_ID = re.compile(r"^(?:hf-hub:)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?$")
_FILE_SUFFIXES = (".safetensors", ".toml", ".json", ".pth", ".pt", ".ckpt", ".png", ".jpg")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def parse_hub_id(source: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``source`` names a Hub repository, else None.

    ``"hf-hub:owner/name"`` always does; ``"owner/name"`` (and ``"owner/name@revision"``) does when no
    local path of that name exists and it does not end like a file (``.safetensors``, ``.toml``, ...).
    """
    if isinstance(source, os.PathLike):
        return None
    text = str(source)
    explicit = text.startswith("hf-hub:")
    if not explicit and (Path(text).exists() or text.lower().endswith(_FILE_SUFFIXES)):
        return None
    match = _HUB_ID.match(text)
    if match is None:
        if explicit:
            raise PretrainedError(f"{text!r} is not a Hub id; write hf-hub:owner/name (or hf-hub:owner/name@revision)")
        return None
    return match.group(1), match.group(2)


class _HubLookupError(PretrainedError):
    """A failed Hub look-up; ``why`` and ``fix`` let a caller that also tried a local path say both."""

    def __init__(self, repo_id: str, revision: str | None, why: str, fix: str) -> None:
        rev = f" (revision {revision})" if revision else ""
        super().__init__(f"cannot load {repo_id}{rev} from the Hugging Face Hub: {why}; {fix}")
        self.why, self.fix = why, fix


def _hub_error(repo_id: str, revision: str | None, exc: BaseException, what: str = "") -> PretrainedError:
    """One line for a failed Hub look-up: what was asked, why it failed, what to do."""
    from huggingface_hub import constants

    name = type(exc).__name__
    offline = constants.HF_HUB_OFFLINE
    if name == "RevisionNotFoundError":
        why, fix = f"it has no revision {revision!r}", "pass an existing branch, tag or commit"
    elif name in ("RepositoryNotFoundError", "GatedRepoError"):
        why, fix = "the repository does not exist, is private or is gated", "check the name, or log in with `hf auth login`"
    elif name in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
        why, fix = f"it has no {what or 'such file'}", f"it is not an hourglass pretrained folder (no {CONFIG_FILE})"
    elif offline or name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        why = ("HF_HUB_OFFLINE is set and" if offline else "the Hub cannot be reached, and") + \
            f" {what or 'it'} is not in the Hub cache ({constants.HF_HUB_CACHE})"
        fix = "download it once with a network (unset HF_HUB_OFFLINE), or pass a local folder"
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        why, fix = f"{name}: {first}", "check the name and the network"
    return _HubLookupError(repo_id, revision, why, fix)


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: Any) -> Path:
    from huggingface_hub import hf_hub_download

    from hourglass import __version__

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    library_name="hourglass", library_version=__version__))
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line naming the fix
        raise _hub_error(repo_id, revision, exc, filename) from None


def download_pretrained(
    repo_id: str, *, revision: str | None = None, ema: bool | None = True, tensors: bool = True, cache_dir: Any = None,
) -> Path:
    """Fetch a pretrained folder from the Hub (or the Hub cache) and return its local snapshot folder.

    ``config.json`` comes first and says which files exist; then the recipe, the class names and the
    weights that are needed: the EMA ones when ``ema`` is not False and the folder has them, else
    ``model.safetensors`` (``tensors=False``: none).

    Raises:
        PretrainedError: one line (no network and not cached, unknown repository or revision, ...).
    """
    config_path = _download(repo_id, CONFIG_FILE, revision, cache_dir)
    folder = config_path.parent
    if _COMMIT.match(folder.name):
        revision = folder.name  # every file from the same commit (a branch may move between downloads)
    config = _read_config(folder)
    if config is None:
        raise PretrainedError(f"{repo_id} on the Hugging Face Hub is not an hourglass pretrained folder (its "
                              f"{CONFIG_FILE} is not of format {PRETRAINED_FORMAT!r}); pass the id of a repository "
                              "that `hourglass export` or save_pretrained wrote")
    listed = set(config.get("files") or [])
    wanted = [name for name in (RECIPE_FILE, CLASSES_FILE) if name in listed]
    if tensors:
        kinds = config.get("weights") or {WEIGHTS_FILE: "unknown"}
        if ema is not False and EMA_FILE in kinds:
            wanted.append(EMA_FILE)
        else:
            wanted.append(WEIGHTS_FILE if WEIGHTS_FILE in kinds else next(iter(kinds)))
    for name in wanted:
        if not (folder / name).is_file():
            _download(repo_id, name, revision, cache_dir)
    return folder


def resolve_source(
    source: str | os.PathLike, *, revision: str | None = None, ema: bool | None = True, tensors: bool = True,
    cache_dir: Any = None,
) -> Path:
    """A local path for ``source``: itself, or the snapshot folder of a Hub id (downloaded when needed).

    Args:
        source: a folder, file, run directory, ``"hf-hub:owner/name"`` or ``"owner/name"`` (see :func:`parse_hub_id`).
        revision: a Hub branch, tag or commit (also ``"owner/name@revision"``).
        ema, tensors, cache_dir: which weights to fetch (:func:`download_pretrained`).

    Raises:
        PretrainedError: a Hub id that cannot be fetched (the message also says no local path has that name).
    """
    hub = parse_hub_id(source)
    if hub is None:
        if revision is not None:
            raise PretrainedError(f"revision={revision!r} applies to Hub ids; {source} is a local path")
        return Path(source)
    repo_id, at = hub
    if at and revision and at != revision:
        raise PretrainedError(f"{source} names revision {at!r} but revision={revision!r} was passed; give one")
    try:
        return download_pretrained(repo_id, revision=revision or at, ema=ema, tensors=tensors, cache_dir=cache_dir)
    except _HubLookupError as exc:
        if str(source).startswith("hf-hub:"):
            raise
        raise PretrainedError(f"{source} does not exist here, and as a Hugging Face Hub id: {exc.why}; {exc.fix} "
                              "(or check the local path)") from None


# -- uploading ---------------------------------------------------------------------------------------
def push_to_hub(
    folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, revision: str | None = None,
    commit_message: str | None = None, token: str | None = None,
) -> str:
    """Upload a pretrained folder to the Hub with ``huggingface_hub`` (``create_repo`` + ``upload_folder``).

    Args:
        folder: a pretrained folder (``hourglass export`` or ``save_pretrained`` wrote it).
        repo_id: ``"owner/name"``; created when missing.
        private: create the repository as private.
        revision: the branch to commit to.
        commit_message: default ``"Upload hourglass model"``.
        token: a Hub token (default: the one ``hf auth login`` stored, or ``HF_TOKEN``).

    Returns:
        The URL of the commit.

    Raises:
        PretrainedError: one line (offline, not logged in, no network, ...); the folder is left as it is.
    """
    from huggingface_hub import constants, create_repo, upload_folder

    folder = Path(folder)
    if not is_pretrained_folder(folder):
        raise PretrainedError(f"{folder} is not a pretrained folder (no hourglass {CONFIG_FILE}); write one with "
                              "`hourglass export` or model.save_pretrained(...) first")
    if parse_hub_id(f"hf-hub:{repo_id}") is None or "@" in repo_id:
        raise PretrainedError(f"{repo_id!r} is not a Hub repository id; use owner/name")
    later = f"upload it later with `hf upload {repo_id} {folder}`"
    if constants.HF_HUB_OFFLINE:
        raise PretrainedError(f"cannot upload to {repo_id}: HF_HUB_OFFLINE is set (offline mode); {folder} is "
                              f"written: unset HF_HUB_OFFLINE and {later}")
    try:
        create_repo(repo_id, private=private, exist_ok=True, token=token)
        info = upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision, token=token,
                             commit_message=commit_message or "Upload hourglass model")
    except Exception as exc:  # noqa: BLE001 - one line: what failed, and that the folder is intact
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PretrainedError(f"cannot upload to {repo_id}: {type(exc).__name__}: {first}; {folder} is written: "
                              f"check the network and your login (`hf auth login`), then {later}") from None
    return str(getattr(info, "commit_url", info))
