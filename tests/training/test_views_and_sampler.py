"""Random views (reproducible, anatomy-preserving) and balanced batches (pure function of the step)."""

import numpy as np
import torch

from neurosepclr.config import load_config
from neurosepclr.training.sampler import balanced_batch
from neurosepclr.training.views import apply_view, draw_view_params, make_views, smooth_displacement


def augment(*overrides):
    return load_config(None, [f"train.augment.{o}" for o in overrides]).train.augment


def test_views_are_reproducible_from_their_parameters_and_seed():
    x = torch.randn(3, 1, 12, 14, 10)
    cfg = augment()
    v1, v2, p1, _ = make_views(x, cfg, torch.Generator().manual_seed(5))
    torch.testing.assert_close(apply_view(x, p1, cfg), v1)
    again = make_views(x, cfg, torch.Generator().manual_seed(5))
    torch.testing.assert_close(again[1], v2)
    assert not torch.allclose(v1, v2)


def test_zero_augmentation_is_the_identity():
    x = torch.randn(2, 1, 10, 12, 8)
    cfg = augment(
        "rotation_deg=0", "scale=0", "translation_vox=0", "gain=0", "offset=0", "bias_field=0", "noise=0"
    )
    view, _, _, _ = make_views(x, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(view, x, atol=1e-5, rtol=1e-5)


def test_flip_is_off_by_default_and_mirrors_left_right_when_on():
    x = torch.zeros(1, 1, 8, 6, 6)
    x[0, 0, 1] = 1.0  # a plane near the left/right edge (first axis = RAS x)
    cfg = augment(
        "rotation_deg=0",
        "scale=0",
        "translation_vox=0",
        "gain=0",
        "offset=0",
        "bias_field=0",
        "noise=0",
        "flip=true",
    )
    params = draw_view_params(1, cfg, torch.Generator().manual_seed(0))
    params["flip"][:] = True
    flipped = apply_view(x, params, cfg)
    assert flipped[0, 0, 6].mean() > 0.9 and flipped[0, 0, 1].mean() < 0.1
    assert not draw_view_params(64, augment(), torch.Generator().manual_seed(0))["flip"].any()


NO_AFFINE_OR_INTENSITY = ("rotation_deg=0", "scale=0", "translation_vox=0", "gain=0", "offset=0")
NO_INTENSITY_NOISE = ("bias_field=0", "noise=0")


def test_deformation_is_off_by_default_and_leaves_the_random_stream_of_other_views_unchanged():
    plain = draw_view_params(4, augment(), torch.Generator().manual_seed(1))
    assert "deformation_seed" not in plain
    deformed = draw_view_params(4, augment("deformation_vox=1.0"), torch.Generator().manual_seed(1))
    for key, value in plain.items():
        torch.testing.assert_close(deformed[key], value)


def test_deformation_moves_voxels_smoothly_by_about_its_amplitude_and_is_reproducible():
    x = torch.zeros(1, 1, 16, 16, 16)
    x[0, 0, :, :, 8:] = 1.0  # a step edge along the last axis (grid x)
    cfg = augment(*NO_AFFINE_OR_INTENSITY, *NO_INTENSITY_NOISE, "deformation_vox=1.0")
    params = draw_view_params(1, cfg, torch.Generator().manual_seed(3))
    view = apply_view(x, params, cfg)
    torch.testing.assert_close(apply_view(x, params, cfg), view)
    assert (view - x).abs().max() > 0.2  # the edge moved somewhere
    interior = view[0, 0, 2:-2, 2:-2, 2:-2]
    assert interior.min() > -1e-5 and interior.max() < 1 + 1e-5  # a resampling, no new intensities
    field = smooth_displacement(params["deformation_seed"], [16, 16, 16], 1.0, 2.0)
    assert field.shape == (1, 16, 16, 16, 3)
    assert 0.4 < float(field.std()) < 1.2

    # smooth: neighbouring voxels move together far more than voxels 8 apart
    def lag_correlation(lag):
        pairs = torch.stack([field[0, :, :, :-lag].flatten(), field[0, :, :, lag:].flatten()])
        return float(torch.corrcoef(pairs)[0, 1])

    assert lag_correlation(1) > 0.6 and abs(lag_correlation(8)) < 0.3


def test_balanced_batches_hold_both_groups_and_cover_every_subject():
    is_target = np.array([True] * 30 + [False] * 10)
    seen = set()
    for step in range(10):
        batch = balanced_batch(is_target, 8, 0.5, step, seed=3)
        assert len(batch) == 8 and is_target[batch].sum() == 4
        assert len(set(batch)) == 8
        seen |= set(batch.tolist())
    assert seen == set(range(40))
    np.testing.assert_array_equal(
        balanced_batch(is_target, 8, 0.5, 7, 3), balanced_batch(is_target, 8, 0.5, 7, 3)
    )
    assert not np.array_equal(
        balanced_batch(is_target, 8, 0.5, 7, 3), balanced_batch(is_target, 8, 0.5, 7, 4)
    )
