"""Random views (reproducible, anatomy-preserving) and balanced batches (pure function of the step)."""

import numpy as np
import torch

from neurosepclr.config import load_config
from neurosepclr.training.sampler import balanced_batch
from neurosepclr.training.views import apply_view, draw_view_params, intensity_channels, make_views


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


def test_view_draws_keep_the_random_stream_of_earlier_versions():
    """The removed cut-out option drew (n,) and (n, 6) uniform numbers after the noise seeds; they
    are still consumed, so the draws after them (the second view) are what they were (decision 0007)."""
    generator = torch.Generator().manual_seed(5)
    first = draw_view_params(3, augment(), generator)
    after = torch.rand(1, generator=generator)
    reference = torch.Generator().manual_seed(5)  # the draws of the earlier version, in its order
    torch.rand(3, 3, generator=reference), torch.rand(3, 3, generator=reference)  # rotation, scale
    torch.rand(3, 3, generator=reference), torch.rand(3, generator=reference)  # translation, flip
    torch.randn(3, 1, 3, 3, 3, generator=reference)  # bias
    torch.rand(3, generator=reference), torch.rand(3, generator=reference)  # gain, offset
    noise_seeds = torch.randint(0, 2**31 - 1, (3,), generator=reference)
    torch.rand(3, generator=reference), torch.rand(3, 6, generator=reference)  # the cut-out draws
    assert torch.equal(first["noise_seed"], noise_seeds)
    assert torch.equal(torch.rand(1, generator=reference), after)


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


def test_scanner_intensity_changes_leave_morphometry_channels_as_measured():
    """Gain, offset and bias field change the t1 channel only; a gm_modulated channel (a volume
    measurement) keeps its values up to the spatial transform they share."""
    x = torch.rand(2, 2, 10, 12, 8) + 0.5
    cfg = augment("rotation_deg=0", "scale=0", "translation_vox=0", "noise=0", "gain=0.5", "bias_field=0.5")
    mask = intensity_channels(["t1", "gm_modulated"], cfg.intensity_features)
    assert mask.tolist() == [True, False]
    params = draw_view_params(2, cfg, torch.Generator().manual_seed(3))
    view = apply_view(x, params, cfg, mask)
    torch.testing.assert_close(view[:, 1], x[:, 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(view[:, 0], x[:, 0], atol=1e-2)
    everywhere = apply_view(x, params, cfg)  # no mask: the earlier behaviour, all channels
    torch.testing.assert_close(everywhere[:, 0], view[:, 0])
    assert not torch.allclose(everywhere[:, 1], x[:, 1], atol=1e-2)
