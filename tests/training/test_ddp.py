"""torchrun with 2 CPU processes (gloo): both ranks train on their shards and end in agreement."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml"


@pytest.mark.ddp
@pytest.mark.parametrize("gather", ["true", "false"])
def test_two_cpu_ranks_agree(tmp_path, tiny_derivatives, gather):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "neurosepclr",
        "--quiet",
        "train",
        str(tiny_derivatives),
        str(run),
        "--config",
        str(SMOKE),
        "--set",
        "train.device=cpu",
        "--set",
        f"train.gather_embeddings={gather}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    distributed = json.loads((run / "run.json").read_text())["distributed"]
    assert distributed == {"world_size": 2, "ranks_agree": True, "gather_embeddings": gather == "true"}
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))  # rank 0 alone writes
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "embeddings.tsv").is_file()
