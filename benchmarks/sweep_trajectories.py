"""Print the validation probe trajectory of sweep runs: step, dx bal. acc. per space, salient k-means
ARI on validation patients, and the label-free cluster-structure score (with its K) of training patients.

Usage: ``python benchmarks/sweep_trajectories.py SWEEP_OUT`` (each run folder's ``metrics.jsonl``).
"""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("sweep", type=Path, help="salient_sweep.py OUT folder")
for metrics in sorted(parser.parse_args().sweep.glob("*/metrics.jsonl")):
    rows = []
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "val/salient/diagnosis_bacc" in record:
            ari = record.get("val/salient/kmeans_ari", float("nan"))
            salient, common = record["val/salient/diagnosis_bacc"], record["val/common/diagnosis_bacc"]
            structure = record.get("train/salient/cluster_score", float("nan"))
            k = record.get("train/salient/cluster_k", float("nan"))
            rows.append(f"{record['step']}:{salient:.2f}/{common:.2f}/{ari:.2f}/{structure:.2f}(K{k:.0f})")
    print(metrics.parent.name, "step:salient_dx/common_dx/val_kmeans_ari/cluster_score(K)", " ".join(rows))
