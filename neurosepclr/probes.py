"""Linear probes: how much a representation knows about a label, fitted on training subjects only.

One definition for the validation probes of training and the scorecard of ``evaluate``: a
standardised logistic regression (balanced classes) for labels, a standardised ridge regression for
numbers (docs/method.md, "How results are judged").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_classifier() -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))


def linear_regressor() -> Pipeline:
    return make_pipeline(StandardScaler(), Ridge(alpha=1.0))


def balanced_accuracy_probe(x_train, y_train, x_test, y_test) -> float:
    """Held-out balanced accuracy of :func:`linear_classifier`; NaN when a side has one class."""
    if len(set(y_train)) < 2 or len(set(y_test)) < 2:
        return float("nan")
    model = linear_classifier().fit(x_train, y_train)
    return float(balanced_accuracy_score(y_test, model.predict(x_test)))


def r2_probe(x_train, y_train, x_test, y_test) -> float:
    """Held-out R² of :func:`linear_regressor`; NaN with fewer than two test subjects."""
    if len(y_test) < 2:
        return float("nan")
    model = linear_regressor().fit(x_train, y_train)
    return float(r2_score(y_test, model.predict(x_test)))


def held_out_predictions(
    x: np.ndarray, y: np.ndarray, train: np.ndarray | None, seed: int, classification: bool
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(predictions, rows they are for): fitted on ``train`` rows and predicted on the others, or by
    5-fold cross-validation when there is no split; (None, None) when the labels cannot support it."""
    model = linear_classifier() if classification else linear_regressor()
    if train is not None and train.any() and (~train).any():
        if classification and len(set(y[train])) < 2:
            return None, None
        model.fit(x[train], y[train])
        return model.predict(x[~train]), ~train
    if classification:
        counts = pd.Series(y).value_counts()
        folds = int(min(5, counts.min())) if len(counts) > 1 else 0
        if folds < 2:
            return None, None
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        if len(y) < 10:
            return None, None
        cv = 5
    return cross_val_predict(model, x, y, cv=cv), np.ones(len(y), dtype=bool)
