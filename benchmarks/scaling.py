"""How the costs after ``preprocess`` grow with the number of subjects: data cache, training step,
``subtype`` (embedding, stability, saliency, report).

Synthetic derivatives (no simulated heads): a ``preprocess``-shaped folder of N model-ready images on
the analysis grid (the template T1 plus per-subject noise and a per-patient intensity change), with
``cohort.tsv``. Every measurement runs the package's own code in a fresh process, so its peak RSS
(``ru_maxrss``) is its own:

* ``cache``: ``load_derivatives`` into RAM and into a memory map (``train.cache: memmap``);
* ``train``: ``train`` for a few steps (median seconds per step from ``metrics.jsonl``);
* ``subtype``: ``subtype`` on that run, each of its steps timed, and the size of ``report.html``.

    python benchmarks/scaling.py OUT --sizes 1000 5000 10000 --resolution 6
    python benchmarks/scaling.py OUT --sizes 1000 --resolution 2 --skip-train
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from neurosepclr.data.preprocess import analysis_grid, output_paths
from neurosepclr.io import atomic_write_bytes, nifti_gz_bytes, tsv_text

TRAIN_STEPS = 6


def write_derivatives(out: Path, n: int, resolution: float, seed: int = 0) -> float:
    """N synthetic model-ready images and cohort.tsv (half controls); returns the seconds taken."""
    started = time.perf_counter()
    grid = analysis_grid(resolution, 4.0)
    rng = np.random.default_rng(seed)
    base = np.where(grid.brain, (grid.t1 - grid.t1[grid.brain].mean()) / grid.t1[grid.brain].std(), 0.0)
    rows = []
    for index in range(n):
        pid = f"sub-{index:05d}"
        patient = index % 2 == 1
        volume = base * (1.0 - 0.1 * patient * (index % 3) / 2) + rng.normal(0, 0.3, grid.shape) * grid.brain
        path = output_paths(pid, "n/a", resolution)["preproc"]
        atomic_write_bytes(out / path, nifti_gz_bytes(grid.image(volume)))
        rows.append(
            {
                "participant_id": pid,
                "session_id": "n/a",
                "path": f"{pid}/anat/{pid}_T1w.nii.gz",
                "preproc": path.as_posix(),
                "group": "target" if patient else "background",
                "diagnosis": "PT" if patient else "CN",
                "age": round(float(rng.uniform(55, 85)), 1),
                "sex": "F" if rng.random() < 0.5 else "M",
                "site": f"site{index % 3}",
                "template_correlation": 0.9,
                "qc_pass": True,
            }
        )
    atomic_write_bytes(out / "cohort.tsv", tsv_text(pd.DataFrame(rows)).encode())
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemorySampler:
    """Peaks of anonymous memory (RAM the process owns) and of mapped file pages (a memory map's
    pages, which the kernel may drop at any time), sampled from /proc every 20 ms: ``ru_maxrss``
    adds both together."""

    def __init__(self) -> None:
        import threading

        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peaks:
                self.peaks[key] = max(self.peaks[key], int(value.split()[0]))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {"peak_anon_mb": self.peaks["RssAnon"] / 1024, "peak_file_mb": self.peaks["RssFile"] / 1024}


def measure_cache(derivatives: Path, memmap: bool) -> dict:
    from neurosepclr.training.data import load_derivatives

    started = time.perf_counter()
    data = load_derivatives(derivatives, 1, memmap=derivatives.parent / "cache.npy" if memmap else None)
    return {
        "seconds": time.perf_counter() - started,
        "shape": list(data.volumes.shape),
        "cache_mb": data.volumes.numel() * 4 / 2**20,
    }


def settings(extra: list[str]) -> list[str]:
    return [
        "train.pool=1",
        "train.device=cpu",
        f"train.steps={TRAIN_STEPS}",
        f"train.eval_every={TRAIN_STEPS}",
        "train.cache=memmap",
        "train.threads=1",
        "subtype.k=3",
        *extra,
    ]


def measure_train(derivatives: Path, run: Path, extra: list[str]) -> dict:
    from neurosepclr.config import load_config
    from neurosepclr.training.loop import train

    config = load_config(Path(__file__).parents[1] / "pipelines" / "demo.yaml", settings(extra))
    started = time.perf_counter()
    train(config, derivatives, run, force=True, progress=False)
    steps = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"seconds": time.perf_counter() - started, "step_seconds_median": statistics.median(steps[1:])}


def measure_subtype(run: Path, extra: list[str]) -> dict:
    import neurosepclr.analysis.subtype as subtype_module
    from neurosepclr.config import load_config

    timings: dict[str, float] = {}

    def timed(name, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    steps = {"embed": "embed", "stability": "choose_k", "fit": "fit_subtypes", "saliency": "saliency_maps"}
    steps |= {"maps_tables": "write_saliency_maps", "effect_size_maps": "analysis_grid_maps"}
    steps |= {"clusters": "cluster_tables", "report": "write_report"}
    for name, attribute in steps.items():
        setattr(subtype_module, attribute, timed(name, getattr(subtype_module, attribute)))
    config = load_config(Path(__file__).parents[1] / "pipelines" / "demo.yaml", settings(extra))
    started = time.perf_counter()
    subtype_module.subtype(run, run / "subtype", config)
    attributed = json.loads((run / "subtype" / "maps" / "saliency.json").read_text())["subjects_attributed"]
    return {
        "seconds": time.perf_counter() - started,
        **{f"{name}_seconds": value for name, value in timings.items()},
        "attributed": sum(v for k, v in attributed.items() if k != "limit_per_group"),
        "report_mb": (run / "subtype" / "report.html").stat().st_size / 2**20,
    }


def child(kind: str, args: list[str]) -> dict:
    """One measurement in a fresh process; its result and peak RSS."""
    command = [sys.executable, __file__, "-", "--measure", kind, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    printed = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(printed.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--resolution", type=float, default=6.0)
    parser.add_argument("--skip-train", action="store_true", help="the cache only (implies --skip-subtype)")
    parser.add_argument("--skip-subtype", action="store_true")
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.measure:  # inside the child process
        kind, *paths = args.measure
        import torch

        torch.set_num_threads(1)
        sampler = MemorySampler()
        if kind == "cache":
            result = measure_cache(Path(paths[0]), paths[1] == "memmap")
        elif kind == "train":
            result = measure_train(Path(paths[0]), Path(paths[1]), extra)
        else:
            result = measure_subtype(Path(paths[0]), extra)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb(), **sampler.stop()}))
        return

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"# {machine}; one thread per measurement; {time.strftime('%Y-%m-%d')}")
    rows = []
    for n in args.sizes:
        derivatives = args.out / f"n{n}_res{args.resolution:g}" / "derivatives"
        row = {"n": n, "resolution_mm": args.resolution}
        row["write_seconds"] = write_derivatives(derivatives, n, args.resolution)
        for mode in ("ram", "memmap"):
            result = child("cache", [str(derivatives), mode])
            row[f"cache_{mode}_seconds"] = result["seconds"]
            row[f"cache_{mode}_peak_rss_mb"] = result["peak_rss_mb"]
            row[f"cache_{mode}_peak_anon_mb"] = result["peak_anon_mb"]
            row["cache_mb"] = result["cache_mb"]
        if args.skip_train:
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        run = derivatives.parent / "run"
        result = child("train", [str(derivatives), str(run)])
        row["train_step_seconds"] = result["step_seconds_median"]
        row["train_peak_rss_mb"] = result["peak_rss_mb"]
        row["train_peak_anon_mb"] = result["peak_anon_mb"]
        if not args.skip_subtype:
            result = child("subtype", [str(run)])
            row |= {f"subtype_{k}": v for k, v in result.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows).round(3)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
