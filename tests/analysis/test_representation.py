"""Contrastive PCA as a representation subtype can cluster (issue 21) and the consensus across runs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from neurosepclr.analysis.baselines import ContrastivePCA
from neurosepclr.analysis.consensus import consensus_subtypes, joint_space, run_subtyper
from neurosepclr.analysis.representation import (
    Embedded,
    LinearEncoder,
    choose_alpha,
    encode,
    flat_inputs,
    load_encoder,
    save_encoder,
)
from neurosepclr.clustering import (
    SalientSubtyper,
    centred_on,
    co_association,
    consensus_assign,
    consensus_clustering,
    label_mapping,
)
from neurosepclr.config import SubtypeConfig


def linear_cohort(seed=0, n_controls=40, n_per_subtype=15, shape=(6, 6, 6)):
    """Volumes whose controls and patients share three strong patterns (anatomy, site), and whose
    patients lose signal in one of three voxel blocks (their subtype): separable by a linear map."""
    rng = np.random.default_rng(seed)
    voxels = int(np.prod(shape))
    shared = rng.normal(size=(3, voxels))
    blocks = np.zeros((3, voxels))
    for subtype in range(3):
        blocks[subtype, subtype * 20 : subtype * 20 + 20] = -1.0
    n = n_controls + 3 * n_per_subtype
    subtype = np.r_[np.full(n_controls, -1), np.repeat(np.arange(3), n_per_subtype)]
    x = rng.normal(scale=3.0, size=(n, 3)) @ shared + rng.normal(size=(n, voxels))
    for i in np.flatnonzero(subtype >= 0):
        x[i] += rng.uniform(2.0, 3.0) * blocks[subtype[i]]
    return torch.from_numpy(x.reshape(n, 1, *shape).astype(np.float32)), subtype


def test_the_folded_linear_encoder_equals_contrastive_pca():
    volumes, subtype = linear_cohort()
    x = flat_inputs(volumes)
    model = ContrastivePCA(4, alpha=3.0, n_joint=30).fit(x, subtype >= 0)
    weights = model.components_ @ model.pca_.components_
    encoder = LinearEncoder(weights, weights @ model.pca_.mean_)
    np.testing.assert_allclose(encode(encoder, volumes), model.transform(x), rtol=1e-4, atol=1e-3)
    common, salient = encoder.forward_features(volumes[:3])
    assert common.shape == (3, 0) and salient.shape == (3, 4)


def test_contrastive_pca_with_a_label_free_alpha_recovers_linear_subtypes(tmp_path):
    volumes, subtype = linear_cohort()
    patients, controls = subtype >= 0, subtype < 0
    train = np.random.default_rng(1).random(len(subtype)) < 0.7
    encoder, table = choose_alpha(
        volumes, patients & train, controls & train, [0.3, 3.0, 30.0], [3], 4, n_resamples=5, null_draws=2
    )
    assert table["chosen"].sum() == 1 and set(table["alpha"]) == {0.3, 3.0, 30.0}
    chosen = float(table.loc[table["chosen"], "alpha"].iloc[0])
    assert table.loc[table["chosen"], "score"].iloc[0] == table["score"].max() and chosen in (0.3, 3.0, 30.0)
    coordinates = encode(encoder, volumes)
    model = SalientSubtyper(3, standardise="controls", directions=True, random_state=0)
    model.fit(coordinates[patients & train], reference=coordinates[controls & train])
    held_out = patients & ~train
    assert adjusted_rand_score(subtype[held_out], model.predict(coordinates[held_out])) >= 0.9
    save_encoder(tmp_path / "encoder.npz", encoder)
    np.testing.assert_array_equal(encode(load_encoder(tmp_path / "encoder.npz"), volumes), coordinates)


def test_co_association_is_invariant_to_label_names_and_consensus_recovers_groups():
    truth = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    labellings = []
    for _ in range(20):
        noisy = truth.copy()
        flip = rng.random(len(truth)) < 0.15
        noisy[flip] = rng.integers(0, 3, flip.sum())
        labellings.append(rng.permutation(3)[noisy])  # each refit names its groups at random
    stack = np.stack(labellings)
    co = co_association(stack)
    np.testing.assert_allclose(np.diag(co), 1.0)
    np.testing.assert_allclose(co, co.T)
    found = consensus_clustering(co, 3)
    assert adjusted_rand_score(truth, found) == 1.0
    newcomers = np.stack([labels[[0, 15, 29]] for labels in stack])
    assigned = consensus_assign(co_association(newcomers, stack), found, 3)
    np.testing.assert_array_equal(assigned, found[[0, 15, 29]])
    mapping = label_mapping(np.array([2, 2, 0, 1]), np.array([0, 0, 1, -1]), 3)
    assert mapping[2] == 0 and mapping[0] == 1


def test_centred_subtyper_assigns_to_the_given_groups():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    labels = np.repeat(np.arange(3), 20)
    X = centres[labels] + rng.normal(size=(60, 2))
    model = SalientSubtyper(3, standardise="patients", random_state=0).fit(X)
    swapped = np.array([2, 0, 1])[labels]  # the same groups under other indices
    centred = centred_on(model, X, swapped)
    np.testing.assert_array_equal(centred.predict(X), swapped)
    with pytest.raises(ValueError, match="every group"):
        centred_on(model, X, np.zeros(60, int))


def _space(salient, is_target, split):
    class Data:  # the two fields of CohortTensors that Embedded reads
        pass

    data = Data()
    data.is_target = torch.from_numpy(is_target)
    return Embedded(data, split, np.zeros((len(salient), 0)), salient)


@pytest.mark.parametrize("method", ["joint", "coassociation"])
def test_consensus_of_runs_beats_a_bad_seed_and_reports_agreement(method):
    """Three runs see the same subtypes in different coordinates; the third sees them blurred. Either
    consensus keeps the subtypes; the frequencies are calibrated shares; agreement drops for the bad run."""
    rng = np.random.default_rng(0)
    n_controls, n_per = 30, 20
    truth = np.r_[np.full(n_controls, -1), np.repeat(np.arange(3), n_per)]
    is_target = truth >= 0
    split = np.where(rng.random(len(truth)) < 0.75, "train", "validation")
    directions = np.eye(6)[:3] * 4.0
    spaces = []
    for blur in (0.5, 0.5, 3.0):
        rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
        signal = np.where(is_target[:, None], directions[np.maximum(truth, 0)], 0.0)
        salient = (signal + rng.normal(scale=blur, size=(len(truth), 6))) @ rotation
        spaces.append(_space(salient, is_target, split))
    settings = SubtypeConfig(bootstrap=10, consensus_method=method)
    agreed = consensus_subtypes(spaces, 3, settings, seed=0)
    held_out = is_target & (split != "train")
    assert adjusted_rand_score(truth[is_target], agreed.index[is_target]) >= 0.95
    assert adjusted_rand_score(truth[held_out], agreed.index[held_out]) >= 0.9
    assert (agreed.index[~is_target] == -1).all()
    np.testing.assert_allclose(agreed.frequency.sum(axis=1), 1.0)
    rows = np.flatnonzero(is_target)
    assert agreed.frequency[rows, agreed.index[rows]].mean() > 0.8
    runs = agreed.runs.set_index("run")
    assert runs.loc[2, "ari_with_consensus"] < min(
        runs.loc[0, "ari_with_consensus"], runs.loc[1, "ari_with_consensus"]
    )
    assert 0 < agreed.mean_pairwise_ari < 1


def test_joint_space_averages_the_runs_squared_distances():
    """Side by side and scaled by 1/√R, the runs' standardised coordinates give squared distances that
    are the mean of each run's own (so k-means there clusters the mean of the runs' similarities)."""
    rng = np.random.default_rng(1)
    is_target = np.r_[np.zeros(20, bool), np.ones(30, bool)]
    split = np.full(50, "train")
    spaces = [_space(rng.normal(size=(50, 4)) * scale, is_target, split) for scale in (1.0, 5.0)]
    settings = SubtypeConfig(k=2)
    models = [run_subtyper(space, 2, settings, seed=0) for space in spaces]
    joint = joint_space(spaces, models).salient
    own = [model.standardised(space.salient) for space, model in zip(spaces, models, strict=True)]
    np.testing.assert_allclose(np.linalg.norm(joint, axis=1), 1.0)  # unit directions, averaged
    squared = [((z[:, None] - z[None]) ** 2).sum(axis=2) for z in own]
    np.testing.assert_allclose(((joint[:, None] - joint[None]) ** 2).sum(axis=2), np.mean(squared, axis=0))
