"""One reconstruction as two "nodes" of one process each on this machine (gloo over 127.0.0.1): the two
`python run.py` processes are started by the test, as srun (or torchrun) would start them on two nodes, with
`trainer.num_nodes=2 trainer.devices=1 trainer.strategy=ddp`. Lightning picks the cluster up from the
environment: SLURM's variables (SLURM_NTASKS, SLURM_PROCID, SLURM_NODEID, ...: its SLURMEnvironment) or the
generic NODE_RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR (its LightningEnvironment).

What is checked: every sample is solved exactly once over the two processes (the solve log records index and
pid), both took part, results.csv and summary.json hold every sample once; a dated run dir is refused (each node
would resolve its own); and a stop-and-resume across the two ranks: SIGTERM to both mid-run (SLURM's time limit
or preemption) keeps what each node wrote (node 0 exits 143, status interrupted) and a rerun of both into the
same run dir solves only the samples not yet written, once each (slow).
"""
from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers_engine import REPO, TINY, cli_env, write_conf

pytestmark = pytest.mark.filterwarnings("ignore")
TWO_NODES = ["trainer.accelerator=cpu", "trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(kind: str, node: int, port: int) -> dict:
    """What the cluster sets for node `node` of 2, one task per node."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if kind == "slurm":  # srun's variables for a 2-node, 1-task-per-node job step
        env.update({"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
                    "SLURM_JOB_NAME": "invlab", "SLURM_PROCID": str(node), "SLURM_LOCALID": "0",
                    "SLURM_NODEID": str(node), "SLURM_NODELIST": "127.0.0.1"})
    else:  # torchrun-style: Lightning's default environment
        env.update({"NODE_RANK": str(node), "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    return env


def start_nodes(tmp_path, kind: str, run_dir, *overrides: str):
    cmd = [sys.executable, str(REPO / "run.py"), write_conf(tmp_path / "conf"), *TINY, *TWO_NODES,
           f"hydra.run.dir={run_dir}", *overrides]
    base = {k: v for k, v in cli_env(tmp_path).items() if not k.startswith("SLURM_")}
    port = free_port()
    return [subprocess.Popen(cmd, cwd=tmp_path, env={**base, **node_env(kind, node, port)}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for node in (0, 1)]


def wait_all(procs, timeout: float = 240):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, err))
    return outs


def solved(log):
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()] if log.exists() else []


def indices(run_dir):
    with open(run_dir / "results.csv") as f:
        return [int(r["index"]) for r in csv.DictReader(f)]


def test_cluster_started_ranks_need_a_named_run_dir(tmp_path):
    """Each node composes its own config: a dated run dir would differ between them. Node 0 alone is enough to
    see the refusal, which comes before any collective (so nothing waits for node 1)."""
    cmd = [sys.executable, str(REPO / "run.py"), write_conf(tmp_path / "conf"), *TINY, *TWO_NODES, "data.n=2"]
    env = {**{k: v for k, v in cli_env(tmp_path).items() if not k.startswith("SLURM_")},
           **node_env("slurm", 0, free_port())}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "pass the same run_dir=<shared folder> to every node" in out.stderr


@pytest.mark.slow  # two processes importing torch and Lightning: over 20 s on a loaded 2-core machine
@pytest.mark.parametrize("kind", ["slurm", "env"])
def test_two_nodes_solve_every_sample_once(tmp_path, kind):
    run_dir, log, n = tmp_path / "run", tmp_path / "solved.log", 5
    procs = start_nodes(tmp_path, kind, run_dir, f"data.n={n}", f"solver.log_path={log}")
    for code, err in wait_all(procs):
        assert code == 0, err[-3000:]
    pairs = solved(log)
    assert sorted(i for i, _ in pairs) == list(range(n))  # each exactly once over both nodes
    assert {pid for _, pid in pairs} == {p.pid for p in procs}  # both nodes solved some
    assert indices(run_dir) == list(range(n))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["samples"] == n and summary["counts"] == {"ok": n}
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_two_nodes_stopped_then_resumed(tmp_path):
    """SIGTERM to both tasks mid-run (what SLURM sends at the time limit or on preemption), then a rerun of both
    into the same run dir: only the samples not yet written are solved, once each."""
    run_dir, log, n = tmp_path / "run", tmp_path / "solved.log", 8
    slow = ["batch_size=1", "+solver.delay=0.5", f"data.n={n}", f"solver.log_path={log}"]

    def written():
        return sorted(int(p.stem) for p in (run_dir / "samples").glob("*.json")) if run_dir.exists() else []

    procs = start_nodes(tmp_path, "slurm", run_dir, *slow)
    deadline = time.time() + 180  # until each node has written a sample (node 0 gets the even indices)
    while (time.time() < deadline and not {i % 2 for i in written()} == {0, 1}
           and all(p.poll() is None for p in procs)):
        time.sleep(0.1)
    assert {i % 2 for i in written()} == {0, 1}, "the nodes never both wrote a sample"
    for p in procs:
        p.send_signal(signal.SIGTERM)
    outs = wait_all(procs, timeout=120)
    assert outs[0][0] == 143, outs[0][1][-3000:]  # node 0: interrupted (invlab/engine/stopping.py)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    done = written()
    assert 0 < len(done) < n
    log.unlink()
    procs = start_nodes(tmp_path, "slurm", run_dir, *slow)
    for code, err in wait_all(procs):
        assert code == 0, err[-3000:]
    again = solved(log)
    assert sorted(i for i, _ in again) == sorted(set(range(n)) - set(done))  # the rest, each once
    assert {pid for _, pid in again} == {p.pid for p in procs}
    assert indices(run_dir) == list(range(n))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "ok"
