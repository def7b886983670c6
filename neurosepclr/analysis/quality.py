"""The report's quality box: each check red, amber or green with one line saying why.

The rules follow docs/report.md, "How to read it": the salient space must know the diagnosis
(beyond chance, with the bootstrap interval), more than the common space does, and must not know
the site, age or sex; the chosen K must be more reproducible than structureless data; patients'
assignments must survive bootstrap refits. Every warning the run logged becomes an amber row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

RED, AMBER, GREEN, INFO = "red", "amber", "green", "info"
REPRESENTATIONS_AGREE = 0.65  # ARI from which the SepCLR and contrastive-PCA subtypes count as the same


@dataclass(frozen=True)
class Check:
    status: str  # red / amber / green / info
    check: str
    value: str
    explanation: str


def _probe(probes: pd.DataFrame, space: str, task: str, metric: str) -> pd.Series | None:
    rows = probes[(probes["space"] == space) & (probes["task"] == task) & (probes["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


def _value(row: pd.Series) -> str:
    return f"{row['value']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}], chance {row['chance']:.2f}"


def probe_checks(probes: pd.DataFrame) -> list[Check]:
    """Diagnosis in the salient space, diagnosis in the common space, nuisances in the salient space."""
    checks = []
    salient = _probe(probes, "salient", "diagnosis", "balanced_accuracy")
    common = _probe(probes, "common", "diagnosis", "balanced_accuracy")
    if salient is None:
        checks.append(Check(AMBER, "salient space: diagnosis", "n/a", "no held-out probe could be fitted"))
    elif not salient["ci_low"] > salient["chance"]:
        checks.append(
            Check(
                RED,
                "salient space: diagnosis",
                _value(salient),
                "does not beat chance: the model found nothing patient-specific; the "
                "subtypes below are noise",
            )
        )
    elif salient["value"] < 0.75:
        checks.append(
            Check(
                AMBER,
                "salient space: diagnosis",
                _value(salient),
                "above chance but weak: subtypes rest on a faint patient-specific signal",
            )
        )
    else:
        checks.append(
            Check(
                GREEN,
                "salient space: diagnosis",
                _value(salient),
                "the salient space separates patients from controls",
            )
        )
    if salient is not None and common is not None:
        if common["value"] >= salient["value"]:
            checks.append(
                Check(
                    RED,
                    "common space: diagnosis",
                    _value(common),
                    "the common space predicts the diagnosis at least as well as the salient "
                    "space: the disease was not separated from shared variability",
                )
            )
        elif common["value"] > 0.65:
            checks.append(
                Check(
                    AMBER,
                    "common space: diagnosis",
                    _value(common),
                    "the common space still carries the disease (SepCLR aims at ≤ 0.65)",
                )
            )
        else:
            checks.append(
                Check(
                    GREEN,
                    "common space: diagnosis",
                    _value(common),
                    "the disease is kept out of the common space",
                )
            )
    nuisances = (
        ("site", "balanced_accuracy", 0.25, "site/scanner"),
        ("sex", "balanced_accuracy", 0.25, "sex"),
        ("age", "r2", 0.25, "age"),
    )
    for task, metric, margin, label in nuisances:
        row = _probe(probes, "salient", task, metric)
        if row is None:
            continue
        beats = row["ci_low"] > row["chance"]
        if beats and row["value"] >= row["chance"] + margin:
            status, text = RED, f"the salient space encodes {label}: subtypes may be {label} groups"
        elif beats:
            status, text = AMBER, f"the salient space knows some {label}; check the demographic table"
        else:
            status, text = GREEN, f"no {label} beyond chance in the salient space"
        checks.append(Check(status, f"salient space: {label}", _value(row), text))
    return checks


def stability_check(stability: pd.DataFrame, k: int, forced: bool) -> list[Check]:
    """The chosen (or forced) K against structureless data, and what the rule would have chosen."""
    row = stability[stability["k"] == k]
    checks = []
    best = int(stability.loc[stability["score"].idxmax(), "k"]) if "score" in stability else k
    if forced:
        status = INFO if best == k else AMBER
        text = "forced by subtype.k" + ("" if best == k else f"; the stability rule would choose K = {best}")
        checks.append(Check(status, "number of subtypes", f"K = {k} (forced)", text))
    else:
        checks.append(Check(INFO, "number of subtypes", f"K = {k} (chosen)", "highest stability above noise"))
    if row.empty or "null_stability" not in stability:
        return checks
    row = row.iloc[0]
    value = (
        f"split-half ARI {row['stability_ari_mean']:.2f} ± {row['stability_ari_sd']:.2f}, "
        f"structureless data {row['null_stability']:.2f}"
    )
    if row["score"] <= 0:
        checks.append(
            Check(
                RED,
                "subtypes above noise",
                value,
                "no more reproducible than a structureless cloud: a partition of a continuum",
            )
        )
    elif row["stability_ari_mean"] < 0.8:
        checks.append(
            Check(
                AMBER,
                "subtypes above noise",
                value,
                "above noise, but a different half of the patients gives partly different subtypes",
            )
        )
    else:
        checks.append(
            Check(GREEN, "subtypes above noise", value, "reproducible across halves of the patients")
        )
    return checks


def assignment_check(frequency: np.ndarray | None, confidence: float) -> list[Check]:
    """Share of patients whose subtype survives at least ``confidence`` of the bootstrap refits."""
    if frequency is None or len(frequency) == 0:
        return [Check(INFO, "patients' assignments", "n/a", "no bootstrap refits (subtype.bootstrap: 0)")]
    share = float(np.mean(frequency >= confidence))
    value = f"{share:.0%} of patients at ≥ {confidence:.2f}; median {np.median(frequency):.2f}"
    if share >= 0.8:
        return [Check(GREEN, "patients' assignments", value, "most patients keep their subtype over refits")]
    status = AMBER if share >= 0.5 else RED
    return [
        Check(
            status,
            "patients' assignments",
            value,
            "many patients change subtype between refits: read subtypes as tendencies",
        )
    ]


def representation_check(ari: float | None, reported: str, compared: str) -> list[Check]:
    """Agreement (ARI over all patients) between the reported subtypes and the other representation's."""
    if ari is None:
        return []
    value = f"ARI {ari:.2f} ({reported} reported, {compared} compared)"
    if ari >= REPRESENTATIONS_AGREE:
        return [Check(GREEN, "two representations", value, "both representations find the same subtypes")]
    return [
        Check(
            AMBER if ari >= 0.3 else RED,
            "two representations",
            value,
            "the representations disagree on the subtypes: read both (subtypes.tsv has both "
            "columns) and trust neither alone",
        )
    ]


def consensus_check(mean_pairwise_ari: float | None, runs: int) -> list[Check]:
    """Agreement between the runs (seeds) whose consensus gives the subtypes."""
    if mean_pairwise_ari is None:
        return [Check(INFO, "agreement across seeds", "1 run", "one trained run: its seed may matter")]
    value = f"mean pairwise ARI {mean_pairwise_ari:.2f} over {runs} runs"
    if mean_pairwise_ari >= 0.8:
        return [Check(GREEN, "agreement across seeds", value, "the runs find the same subtypes")]
    return [
        Check(
            AMBER if mean_pairwise_ari >= 0.5 else RED,
            "agreement across seeds",
            value,
            "the runs disagree: the consensus averages them, and its subtypes depend on which runs enter it",
        )
    ]


def warning_checks(warnings: list[str]) -> list[Check]:
    return [Check(AMBER, "warning", "", text) for text in dict.fromkeys(warnings)]


def quality_table(checks: list[Check]) -> pd.DataFrame:
    return pd.DataFrame([asdict(c) for c in checks], columns=["status", "check", "value", "explanation"])
