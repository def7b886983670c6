"""torchrun with 2 CPU processes (gloo): both ranks train on their shards and end in agreement."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[2] / "pipelines" / "smoke.yaml"


@pytest.mark.ddp
@pytest.mark.parametrize("gather, lambda_match", [("true", 10.0), ("false", 0.0)])
def test_two_cpu_ranks_agree(tmp_path, tiny_derivatives, gather, lambda_match):
    """With gathered embeddings the common features are gathered too, for the matching term."""
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
        "--set",
        f"loss.lambda_match={lambda_match}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    distributed = json.loads((run / "run.json").read_text())["distributed"]
    assert distributed == {"world_size": 2, "ranks_agree": True, "gather_embeddings": gather == "true"}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))  # rank 0 alone writes
    matched = [m["loss/common_match"] for m in metrics]
    assert all(value > 0 for value in matched) if lambda_match else all(value == 0 for value in matched)
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "embeddings.tsv").is_file()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.ddp
def test_two_nodes_rendezvous_and_train_like_one_node(tmp_path, tiny_derivatives):
    """2 "nodes" × 1 process on localhost, joined by the c10d rendezvous as a multi-node job would
    be (``torchrun --nnodes 2``): the same losses at every step as 2 processes on one node."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "neurosepclr", "--quiet", "train", str(tiny_derivatives)]
    settings = ["--config", str(SMOKE), "--set", "train.device=cpu"]
    launcher = [sys.executable, "-m", "torch.distributed.run"]
    endpoint = f"127.0.0.1:{free_port()}"
    node = [*launcher, "--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", "--rdzv-id=test-job"]
    node += [f"--rdzv-endpoint={endpoint}", *train, str(tmp_path / "multinode"), *settings]
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    nodes = [subprocess.Popen(node, env=env, **piped) for _ in range(2)]
    single = subprocess.run(
        [*launcher, "--standalone", "--nproc_per_node=2", *train, str(tmp_path / "single"), *settings],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    for process in nodes:
        printed, _ = process.communicate(timeout=240)
        assert process.returncode == 0, printed[-2000:]

    run = json.loads((tmp_path / "multinode" / "run.json").read_text())
    assert run["distributed"]["world_size"] == 2 and run["distributed"]["ranks_agree"]

    def losses(folder):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k.startswith("loss/")} for line in lines]

    assert losses(tmp_path / "multinode") == losses(tmp_path / "single")
    assert len(losses(tmp_path / "multinode")) == 6
    logs = sorted(p.name for p in (tmp_path / "multinode" / "logs").iterdir())
    assert len(logs) == 2 and any("rank1" in name for name in logs)  # one log per rank
