"""`python reproduce.py paper=<name> [scale=cpu|full|paper|smoke]`: every stage of one paper's experiment, then its table.

    python reproduce.py paper=oder                      # scale=cpu: the budgets its README measured on this CPU
    python reproduce.py paper=apnp scale=smoke          # seconds; table under the output dir
    python reproduce.py paper=diffusion scale=paper paper.checkpoint=/ckpt/ffhq_10m.pt paper.data_path=/ffhq
    python reproduce.py paper=apnp hydra/launcher=slurm hydra.launcher.partition=gpu   # sweeps as SLURM jobs

A paper is `conf/paper/<name>.yaml` (names = the experiments/ folders): its `stages` are the commands of the
experiment (a run.py/ood.py sweep, a train.py run, a script), each with per-scale arguments. Each stage runs as its
own process in `<out>/<stage>` (`out=` defaults to outputs/reproduce/<name>/<scale>); `{dir}` in a command is that
folder, `{out}` the paper's. A stage that finished is skipped when rerun with the same command (unless a stage it
`needs` finished again after it); any other is run again, and run.py resumes the samples its run dirs already hold,
so an interrupted reproduction continues where it stopped. A failed stage is recorded (`<stage>/.reproduce.json`),
the stages that need it are skipped, the others still run, and the command exits 1 listing them. The
`hydra/launcher=` choice and `hydra.launcher.*` settings given here go to every multirun stage. Then
`experiments/<name>/table.md` and `table.png` are written (or the name the paper's `table_files` gives the scale;
scale=smoke: into `<out>/`, never over the committed table); invlab/cli/paper_table.py says how. A paper whose
README table takes hours here (diffusion, eigenscore) has a `full` scale for it; its `cpu` scale is a subset that
finishes in under an hour.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from invlab.cli.run import CONF_DIR

ROOT = Path(CONF_DIR).parent
MARKER = ".reproduce.json"
HYDRA_SCRIPTS = ("run.py", "ood.py", "train.py")


class Stop(Exception):
    """SIGTERM/SIGINT while a stage runs."""


def merge_overrides(argv: list[str]) -> list[str]:
    """Later `key=value` tokens replace earlier ones of the same key in place (Hydra refuses a key twice, and a
    scale's settings must win over the stage's); everything else is kept in order. A command with `--options`
    is an argparse script: kept as it is (its last option wins by itself; `--data-set size=32` is no override)."""
    if any(a.startswith("--") for a in argv):
        return list(argv)
    out: list[str] = []
    where: dict[str, int] = {}
    for arg in argv:
        key = arg.partition("=")[0]
        if "=" in arg and not arg.startswith("-") and key in where:
            out[where[key]] = arg
            continue
        if "=" in arg and not arg.startswith("-"):
            where[key] = len(out)
        out.append(arg)
    return out


def stage_argv(paper: DictConfig, name: str, scale: str, out: Path) -> list[str]:
    """The stage's command at this scale: script, its arguments, the paper's run.py settings for the scale, the
    stage's own for the scale, and where it writes."""
    stage = paper.stages[name]
    parts = [str(stage.cmd)]
    script = shlex.split(parts[0])[0]
    if script == "run.py":
        parts.append(str((paper.get("run_args") or {}).get(scale) or ""))
    parts.append(str((stage.get("scale") or {}).get(scale) or ""))
    text = " ".join(parts)
    where = out / name
    if "{dir}" not in text and script in HYDRA_SCRIPTS:
        multirun = "-m" in shlex.split(text)
        text += " hydra.sweep.dir={dir}" if multirun else (" run_dir={dir}" if script == "run.py" else " hydra.run.dir={dir}")
    text = text.replace("{dir}", shlex.quote(str(where))).replace("{out}", shlex.quote(str(out)))
    return merge_overrides(shlex.split(text))


def table_file(paper: DictConfig, scale: str) -> str:
    """The table's file name at this scale: `table.md` unless the paper's `table_files` names another (a paper
    whose README table is one scale's keeps it there, and its quicker scale writes beside it); the figure is the
    same name with .png."""
    name = str((paper.get("table_files") or {}).get(scale) or "table.md")
    if "/" in name or not name.endswith(".md"):
        raise ValueError(f"paper={paper.name}: table_files.{scale} must be a file name ending in .md, not {name!r}.")
    return name


def runs_on(paper: DictConfig, name: str, scale: str) -> bool:
    only = paper.stages[name].get("only")
    return only is None or scale in list(only)


def launcher_args(hydra_overrides, argv: list[str]) -> list[str]:
    """The `hydra/launcher=...` and `hydra.launcher.*=...` overrides given to reproduce.py, for a stage that is a
    Hydra multirun (run.py/ood.py/train.py -m); nothing for any other stage."""
    if argv[0] not in HYDRA_SCRIPTS or "-m" not in argv:
        return []
    return [str(o) for o in hydra_overrides if str(o).startswith(("hydra/launcher=", "hydra.launcher."))]


def read_marker(where: Path) -> dict:
    try:
        return json.loads((where / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def finished(where: Path, argv: list[str], inputs: list[Path] = ()) -> bool:
    """The stage ran to the end with this command, none of its run dirs is failed or unfinished since, and none
    of the stages it needs (their folders: `inputs`) finished again after it (a table over rerun sweeps is stale)."""
    mark = read_marker(where)
    if mark.get("status") != "ok" or mark.get("argv") != argv:
        return False
    for other in inputs:
        theirs = read_marker(other).get("at")
        if theirs is not None and theirs > mark.get("at", float("-inf")):
            return False
    for status in where.rglob("status.json"):
        if ".submitit" not in status.parts and json.loads(status.read_text()).get("status") != "ok":
            return False
    return True


def run_stage(argv: list[str], extra: list[str], where: Path, log) -> tuple[str, float]:
    """Run one stage as a child process (its output goes to <stage>/reproduce.log and the console)."""
    where.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, *argv, *extra]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "HYDRA_FULL_ERROR": "0"}
    start = time.time()
    with open(where / "reproduce.log", "a") as logfile:
        logfile.write(f"$ {shlex.join(cmd)}\n")
        logfile.flush()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in child.stdout:
                logfile.write(line)
                log.write(line)
            rc = child.wait()
        except Stop:
            child.send_signal(signal.SIGTERM)  # run.py keeps every finished sample and exits 143
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    return ("ok" if rc == 0 else f"failed (exit {rc})"), time.time() - start


def write_marker(where: Path, argv: list[str], status: str, seconds: float) -> None:
    where.mkdir(parents=True, exist_ok=True)
    (where / MARKER).write_text(json.dumps({"status": status, "argv": argv, "seconds": round(seconds, 1),
                                            "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "at": time.time()},
                                           indent=1))


def run_one(paper: DictConfig, name: str, scale: str, out: Path, launcher: list[str], results: dict) -> None:
    """Run (or skip) one stage and put its outcome into `results`."""
    where = out / name
    argv = stage_argv(paper, name, scale, out)
    extra = launcher_args(launcher, argv)
    needs = list(paper.stages[name].get("needs") or [])
    blocked = [n for n in needs if results.get(n, "ok") != "ok"]
    if blocked:
        results[name] = f"skipped: needs {', '.join(blocked)}"
    elif finished(where, argv, [out / n for n in needs]):
        results[name] = "ok"
        print(f"[reproduce] {name}: done already ({read_marker(where).get('seconds')} s), skipped", flush=True)
        return
    else:
        before = read_marker(where).get("argv")
        if before is not None and before != argv:  # its run dirs refuse other settings (fingerprint.json)
            print(f"[reproduce] {name}: the command changed since the stage last ran; if a run dir refuses the new "
                  f"settings, delete {where} or give reproduce.py another out=", flush=True)
        print(f"[reproduce] {name}: {shlex.join(['python', *argv, *extra])}", flush=True)
        results[name], seconds = run_stage(argv, extra, where, sys.stdout)
        write_marker(where, argv, results[name], seconds)
    print(f"[reproduce] {name}: {results[name]}", flush=True)


def reproduce(cfg: DictConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from invlab.cli import paper_table

    paper, scale = cfg.paper, str(cfg.scale)
    scales = [str(s) for s in paper.scales]
    if scale not in scales:
        print(f"error: scale={scale} is not a scale of paper={paper.name} (choices: {', '.join(scales)}).",
              file=sys.stderr)
        return 1
    out = Path(str(cfg.out)).absolute()
    names = [n for n in paper.stages if runs_on(paper, n, scale)]
    launcher = list(HydraConfig.get().overrides.hydra)
    results: dict[str, str] = {}

    def stop(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    current = None
    try:
        for name in names:
            current = name
            run_one(paper, name, scale, out, launcher, results)
    except Stop:
        write_marker(out / current, stage_argv(paper, current, scale, out), "interrupted", 0.0)
        print(f"[reproduce] interrupted in stage {current}: what it finished is kept; rerun the same command "
              f"to resume.", file=sys.stderr, flush=True)
        return 143

    table_dir = Path(str(cfg.table_dir)) if cfg.get("table_dir") else (
        out if scale == "smoke" else ROOT / "experiments" / str(paper.name))
    table_md = table_dir / table_file(paper, scale)
    command = shlex.join(["python", "reproduce.py", *HydraConfig.get().overrides.task])
    rows = paper_table.collect(paper, out, names)
    table_md.parent.mkdir(parents=True, exist_ok=True)
    table_md.write_text(paper_table.markdown(paper, rows, scale, command))
    if rows:
        paper_table.figure(paper, rows, table_md.with_suffix(".png"))
    print(f"[reproduce] table: {table_md}" + (f", {table_md.with_suffix('.png')}" if rows else ""))
    failed = {n: r for n, r in results.items() if r != "ok"}
    if failed:
        print(f"error: {len(failed)} of {len(names)} stage(s) of paper={paper.name} did not finish:", file=sys.stderr)
        for n, r in failed.items():
            print(f"  {n}: {r} (log: {out / n / 'reproduce.log'})", file=sys.stderr)
        return 1
    return 0


@hydra.main(config_path=CONF_DIR, config_name="reproduce", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    from invlab.cli.errors import user_message

    try:
        code = reproduce(cfg)
    except Exception as exc:
        msg = user_message(exc)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        code = 1
    if code:
        sys.exit(code)


def main() -> None:
    _hydra_entry()


if __name__ == "__main__":
    main()
