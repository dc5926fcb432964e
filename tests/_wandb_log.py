"""Reads W&B's offline transaction logs (``run-<id>.wandb``) back into protobuf records, for the tests.

wandb 0.19+ writes them from its Go core and ships no Python reader; the records themselves are
``wandb.proto.wandb_internal_pb2.Record`` messages in LevelDB's log framing (32 KiB blocks of
``crc32 (4) | length (2, little endian) | kind (1)`` headers, FULL = 1 ... LAST = 4) after a 7-byte
``:W&B`` file header.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

__all__ = ["wandb_records", "wandb_history"]

_BLOCK, _HEADER = 32768, 7


def wandb_records(path: str | Path) -> list[Any]:
    """Every ``Record`` of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, chunk, records = _HEADER, b"", []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if pos + _HEADER + length > len(data):  # a record still being written
            break
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def wandb_history(path: str | Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The ``run.log`` rows of a finished offline run file: ``{"_step": 1, "loss": 0.4, ...}`` each.

    ``run.finish()`` returns before wandb's core has written the whole file: this waits (up to
    ``timeout`` seconds) for the run's closing ``exit`` record.
    """
    deadline = time.monotonic() + timeout
    records = wandb_records(path)
    while not records or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.1)
        records = wandb_records(path)
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records if record.WhichOneof("record_type") == "history"
    ]
