"""A pre-imported process that forks ``hourglass`` CLI runs and kills them with SIGKILL on cue.

Importing torch and hourglass takes seconds; forking a process that already has them makes each of
the many kill/resume cycles cost only the training itself. The parent (the test) writes one JSON
line per run to stdin and reads one JSON line back:

request ``{"argv": [...], "log": path, "kill": {"after_checkpoints": n, "delay": s} | {"mid_write": n}
| null, "slow_write": s}``; reply ``{"rc": int | null, "killed": bool, "signal": int | null}``.

``fail_write_after`` (n): saves after the first n fail half-way with ENOSPC.
``slow_write`` (seconds) makes every checkpoint write pause half-way, so that a kill timed on the
appearance of the temporary file lands mid-write. Only this test helper patches anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

import hourglass.cli
import hourglass.data  # noqa: F401  (register everything before forking)
import hourglass.diffusion  # noqa: F401
import hourglass.models  # noqa: F401
import hourglass.train.checkpoint as ckpt_module
import hourglass.train.trainer  # noqa: F401


def _slow_writes(pause: float) -> None:
    original = ckpt_module._write_chunks

    def write(f, data):  # first half, flush, pause, second half
        half = len(data) // 2
        original(f, data[:half])
        f.flush()
        time.sleep(pause)
        original(f, data[half:])

    ckpt_module._write_chunks = write


def _failing_writes(ok: int) -> None:
    import errno

    original = ckpt_module._write_chunks
    calls = [0]

    def write(f, data):  # the first ``ok`` saves succeed, later ones hit a full disk half-way
        calls[0] += 1
        if calls[0] > ok:
            original(f, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        original(f, data)

    ckpt_module._write_chunks = write


def _child(request: dict) -> None:
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if request.get("slow_write"):
        _slow_writes(float(request["slow_write"]))
    if request.get("fail_write_after") is not None:
        _failing_writes(int(request["fail_write_after"]))
    try:
        rc = hourglass.cli.main(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        rc = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc))


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(folder.glob("step_*.safetensors")) if folder.is_dir() else []


def _temp_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    return sorted(folder.glob(".step_*.tmp-*")) if folder.is_dir() else []


def _supervise(pid: int, request: dict) -> dict:
    kill = request.get("kill")
    run_dir = Path(request["run_dir"])
    before = {p.name for p in _checkpoints(run_dir)}
    deadline = time.monotonic() + float(request.get("timeout", 120))
    fire_at: float | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            return {"rc": rc if rc >= 0 else None, "killed": False, "signal": -rc if rc < 0 else None}
        now = time.monotonic()
        if now > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"rc": None, "killed": True, "signal": 9, "timeout": True}
        if kill is not None and fire_at is None:
            new = [p for p in _checkpoints(run_dir) if p.name not in before]
            if "mid_write" in kill:
                if len(new) >= kill["mid_write"] and _temp_files(run_dir):
                    fire_at = now
            elif len(new) >= kill["after_checkpoints"]:
                fire_at = now + float(kill.get("delay", 0.0))
        if fire_at is not None and now >= fire_at:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"rc": None, "killed": True, "signal": 9, "temp_files": [p.name for p in _temp_files(run_dir)]}
        time.sleep(0.005)


def main() -> None:
    torch.set_num_threads(1)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        reply = _supervise(pid, request)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
