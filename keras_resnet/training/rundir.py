"""The training run directory and its files, all written atomically.

```
DIR/config.yaml        the resolved config
DIR/time_budget.json   with time_budget_minutes: the epochs chosen (and re-planned), and what from
DIR/history.csv        one row per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate
DIR/checkpoints/       last.keras (every epoch) and backup/ (state for --resume)
DIR/best.keras         the best epoch by the config's checkpoint.monitor
DIR/model.keras        the final model
DIR/metrics.json       final figures, wall time, images/s, precision
DIR/curves.png         loss, accuracy and learning rate per epoch
DIR/logs/              TensorBoard
```
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

from keras_resnet.training.config import write_text_atomic


def default_output(arch: str, root="runs") -> Path:
    return Path(root) / f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDirectory:
    """Paths of one run, and the rules: a fresh run needs an empty (or absent) directory, a
    resumed one needs a ``config.yaml``.

    ``scratch=True`` is for non-chief workers of a multi-worker run: everything they write
    goes to a temporary directory removed by ``cleanup``, except the resume state, which they
    keep under the real directory's ``checkpoints/backup-workerN``.
    """

    def __init__(self, path, *, scratch: bool = False, worker_index: int = 0):
        self.real = Path(path)
        self.scratch = scratch
        self.path = Path(tempfile.mkdtemp(prefix="keras-resnet-worker-")) if scratch \
            else self.real
        backup = f"backup-worker{worker_index}" if scratch else "backup"
        self.backup_dir = self.real / "checkpoints" / backup

    config = property(lambda self: self.path / "config.yaml")
    history = property(lambda self: self.path / "history.csv")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.keras")
    best = property(lambda self: self.path / "best.keras")
    model = property(lambda self: self.path / "model.keras")
    metrics = property(lambda self: self.path / "metrics.json")
    curves = property(lambda self: self.path / "curves.png")
    logs = property(lambda self: self.path / "logs")

    def check_new(self) -> None:
        """Refuse to start a fresh run over an existing one."""
        if self.real.exists() and not self.real.is_dir():
            raise NotADirectoryError(f"output {self.real} exists and is not a directory")
        if self.real.is_dir() and any(self.real.iterdir()):
            raise FileExistsError(
                f"run directory {self.real} is not empty; pass --resume to continue that run, "
                "or choose another --output")

    def check_resumable(self) -> None:
        if not (self.real / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: no config.yaml in {self.real}")

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)

    def resume_epoch(self) -> int:
        """The epoch a resumed run starts at (0 when nothing was backed up)."""
        meta = self.backup_dir / "training_metadata.json"
        for candidate in (meta, Path(f"{meta}.bkp")):
            try:
                return int(json.loads(candidate.read_text())["epoch"])
            except (OSError, ValueError, KeyError):
                continue
        return 0

    def cleanup(self) -> None:
        if self.scratch:
            shutil.rmtree(self.path, ignore_errors=True)


# -- history.csv -------------------------------------------------------------------------------

def read_history(path) -> list[dict]:
    """Rows of a ``history.csv`` as dicts of floats (``epoch`` as int)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                if key is None:
                    continue
                try:
                    parsed[key] = int(value) if key == "epoch" else float(value)
                except (TypeError, ValueError):
                    parsed[key] = math.nan
            rows.append(parsed)
    return rows


def write_history(path, rows: list[dict]) -> None:
    """Rewrite the whole ``history.csv`` atomically (so a kill never leaves half a line)."""
    columns = ["epoch"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format(row.get(k, "")) for k in columns})
    write_text_atomic(path, buffer.getvalue())


def _format(value):
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value


def write_json(path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
