"""W&B as a user meets it (issue 16, item 10): `WANDB_MODE=disabled` is honoured, and an online run
(`logger.offline=false`) that cannot start is one sentence, fast, before anything is solved.

No test reaches the real W&B server (there is no network here). A missing key needs no server at all; a
rejected key is answered by a local HTTP server that replies 401 to everything, as the real one does to a
bad key; "no network" is a closed local port, which wandb retries until `logger.init_timeout`.
"""
from __future__ import annotations

import http.server
import socket
import threading

import pytest

from helpers_engine import run_py

pytestmark = pytest.mark.filterwarnings("ignore")

WANDB_KEYS = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL")


def online(tmp_path, *overrides, env=None, timeout=180):
    """`python run.py logger=wandb logger.offline=false` with no W&B credentials of the machine's user."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return run_py(tmp_path, "logger=wandb", "logger.offline=false", "data.n=1", f"run_dir={tmp_path / 'run'}",
                  *overrides, env={"HOME": str(home), **(env or {})}, unset=WANDB_KEYS, timeout=timeout)


def one_sentence(out, *fragments):
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("wandb:")]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_wandb_mode_disabled_means_no_logger(tmp_path, monkeypatch):
    import os

    from invlab.engine.loggers import make_logger

    node = {"_target_": "lightning.pytorch.loggers.WandbLogger", "offline": True, "save_dir": str(tmp_path),
            "project": "invlab", "init_timeout": 30}
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert make_logger(node) is False
    assert os.environ["WANDB_MODE"] == "disabled"  # not turned into offline behind the user's back


@pytest.mark.slow
def test_wandb_mode_disabled_run_writes_no_wandb_files(tmp_path):
    out = run_py(tmp_path, "logger=wandb", "data.n=1", f"run_dir={tmp_path / 'run'}", env={"WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "results.csv").exists() and not (tmp_path / "run" / "wandb").exists()


def test_online_without_an_api_key_is_one_sentence(tmp_path):
    out = online(tmp_path)
    one_sentence(out, "W&B could not start an online run", "No API key", "WANDB_API_KEY")
    assert not (tmp_path / "run" / "samples").exists()  # nothing was solved


class Reject(http.server.BaseHTTPRequestHandler):
    """What W&B's server answers a bad API key: 401 with a GraphQL error."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"errors":[{"message":"user is not logged in"}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_online_with_a_rejected_key_is_one_sentence(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reject)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = online(tmp_path, env={"WANDB_API_KEY": "0" * 40,
                                    "WANDB_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}"})
    finally:
        server.shutdown()
    one_sentence(out, "W&B could not start an online run", "not logged in")


@pytest.mark.slow
def test_online_without_network_fails_after_the_init_timeout(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: every connection is refused, wandb retries
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = online(tmp_path, "logger.init_timeout=3", env={"WANDB_API_KEY": "0" * 40,
                                                         "WANDB_BASE_URL": f"http://127.0.0.1:{port}"})
    one_sentence(out, "W&B could not start an online run", "init_timeout=3")
    assert out.seconds < 60  # wandb's own default waits 90 s at "setting up run"
