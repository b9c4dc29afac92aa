"""experiments/diffusion/paired.py: the paired difference, its standard error and the win count, on hand-made
results.csv files (diverged rows and digits only one run has are left out)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from helpers_engine import load_script


def paired():
    return load_script("experiments/diffusion/paired.py")


def write(path: Path, rows: list[tuple[int, float, str]]) -> Path:
    path.mkdir(parents=True)
    lines = ["index,psnr,status"] + [f"{i},{v},{s}" for i, v, s in rows]
    (path / "results.csv").write_text("\n".join(lines) + "\n")
    return path


def test_paired_difference_se_and_wins(tmp_path, capsys):
    a = write(tmp_path / "a", [(0, 20.0, "ok"), (1, 22.0, "ok"), (2, 25.0, "ok"), (3, 1.0, "diverged"), (4, 9.0, "ok")])
    b = write(tmp_path / "b", [(0, 19.0, "ok"), (1, 23.0, "ok"), (2, 21.0, "ok"), (3, 18.0, "ok")])
    assert paired().main([str(a), str(b)]) == 0
    d = [1.0, -1.0, 4.0]                       # digits 0-2: digit 3 diverged in A, digit 4 only in A
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2 / 3)
    out = capsys.readouterr().out
    assert f"{mean:+.2f} ± {se:.2f}" in out and "3 digits" in out and "better on 2/3" in out


def test_paired_refuses_an_ambiguous_folder(tmp_path):
    write(tmp_path / "s" / "0", [(0, 1.0, "ok"), (1, 2.0, "ok")])
    write(tmp_path / "s" / "1", [(0, 1.0, "ok"), (1, 2.0, "ok")])
    with pytest.raises(SystemExit, match="2 results.csv"):
        paired().main([str(tmp_path / "s"), str(tmp_path / "s" / "0")])
