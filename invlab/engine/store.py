"""Per-sample results on disk: what makes a killed run resumable and a DDP run mergeable.

Each finished sample `i` leaves `samples/{i:05d}.png` (truth | measurement | reconstruction, stacked
vertically), optionally `samples/{i:05d}.pt`, and last `samples/{i:05d}.json` (its results row). Every
file is written to a temporary name and renamed, so a sample counts as done exactly when its JSON
exists, whatever moment the run was killed at, and two ranks writing the same sample cannot corrupt it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

SAMPLES = "samples"
FINGERPRINT = "fingerprint.json"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename onto `path` (atomic on one filesystem)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)


def _json_value(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class SampleStore:
    """The `samples/` folder of a run directory."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / SAMPLES

    def path(self, index: int, suffix: str) -> Path:
        return self.dir / f"{index:05d}{suffix}"

    def done(self) -> set[int]:
        """Indices whose results row exists."""
        if not self.dir.is_dir():
            return set()
        return {int(p.stem) for p in self.dir.glob("[0-9]*.json") if p.stem.isdigit()}

    def write(self, index: int, row: dict, strip=None, tensors: dict | None = None) -> None:
        """Write one sample's picture, tensors and (last) its results row."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if strip is not None:
            from invlab.utils.images import save_png

            atomic_write(self.path(index, ".png"), lambda p: save_png(strip, p))
        if tensors:
            import torch

            atomic_write(self.path(index, ".pt"), lambda p: torch.save(tensors, p))
        text = json.dumps({k: _json_value(v) for k, v in row.items()}, indent=1)
        atomic_write(self.path(index, ".json"), lambda p: Path(p).write_text(text))

    def rows(self, indices) -> list[dict]:
        """Results rows for `indices` that are done, sorted by index; JSON nulls read back as NaN."""
        out = []
        for i in sorted(set(indices) & self.done()):
            row = json.loads(self.path(i, ".json").read_text())
            out.append({k: (math.nan if v is None else v) for k, v in row.items()})
        return out

    # ---- a guard against mixing results of different experiments in one directory -------------
    def check_fingerprint(self, fingerprint: dict, write: bool) -> None:
        """Raise ConfigError when the run dir already holds samples made with another configuration."""
        from invlab.errors import RunDirError

        path = self.run_dir / FINGERPRINT
        if path.exists():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            if changed and self.done():
                raise RunDirError(
                    f"the run directory {self.run_dir} already holds results made with different "
                    f"{', '.join(changed)} settings; choose a new run_dir or delete {self.dir}.")
        if write:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(fingerprint, indent=1, sort_keys=True, default=str)
            atomic_write(path, lambda p: Path(p).write_text(text))

    def check_sources(self, sources) -> None:
        """Raise RunDirError when a finished sample was made from another file than the one the dataset now
        has at its index (a folder that gained or lost files shifts every later index), or from a file
        this run cannot check (a sample written before the `source` column existed). `sources`: the
        dataset's file per index, or None for datasets without files."""
        from invlab.errors import RunDirError

        if sources is None:
            return
        for i in sorted(self.done()):
            if i >= len(sources):
                continue  # beyond this run's data.limit: not reported, not re-solved
            old = json.loads(self.path(i, ".json").read_text()).get("source")
            if old != sources[i]:
                was = "a file it did not record" if old is None else repr(old)
                raise RunDirError(
                    f"the run directory {self.run_dir} holds sample {i} made from {was}, but the data now has "
                    f"{sources[i]!r} at that position (were files added to or removed from data.path?); "
                    f"choose a new run_dir or delete {self.dir}.")

    def check_writable(self) -> None:
        """Create the run directory and write a probe file in it; RunDirError saying why when that fails
        (read-only, below a file, a system folder such as /proc)."""
        from invlab.errors import RunDirError

        probe = self.run_dir / f".invlab-write-probe.{os.getpid()}"
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise RunDirError(f"run_dir={self.run_dir} cannot be written ({err.strerror or err}); "
                              f"choose another run_dir.") from err
