"""Reliability case 8: SIGKILL during a checkpoint write, and SIGKILL mid-training then --resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neurosepclr.training.checkpoint import load_checkpoint, save_checkpoint

SMOKE = str(Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml")

KILL_DURING_WRITE = """
import os, signal, sys, torch
import neurosepclr.io as io
from neurosepclr.training.checkpoint import save_checkpoint

path, offset = sys.argv[1], int(sys.argv[2])
real_fdopen = os.fdopen

class Dying:
    def __init__(self, handle): self.handle = handle
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def write(self, data):
        self.handle.write(data[:offset]); self.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)

io.os.fdopen = lambda fd, mode: Dying(real_fdopen(fd, mode))
save_checkpoint(path, {"model": {"w": torch.full((1000,), 2.0)}, "step": 2})
"""


@pytest.mark.slow
@pytest.mark.parametrize("offset", [0, 1, 100, 2000, 5000])
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, offset):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.full((1000,), 1.0)}, "step": 1})
    result = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, str(path), str(offset)], check=False)
    assert result.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    assert state["step"] == 1 and float(state["model"]["w"][0]) == 1.0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers)  # never final


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_ends_with_the_uninterrupted_weights(tmp_path, tiny_derivatives):
    base = [sys.executable, "-m", "neurosepclr", "--quiet", "train", str(tiny_derivatives)]
    settings = ["--config", SMOKE, "--set", "train.steps=40", "--set", "train.checkpoint_every=3",
                "--set", "train.eval_every=20", "--set", "train.threads=1"]  # fmt: skip
    reference = tmp_path / "reference"
    subprocess.run([*base, str(reference), *settings], check=True)

    run = tmp_path / "killed"
    process = subprocess.Popen([*base, str(run), *settings])
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 10:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 40

    subprocess.run([*base, str(run), *settings, "--resume"], check=True)
    expected, resumed = _weights(reference), _weights(run)
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0, msg=key)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 41))
