"""Saliency: captum attributions of the distance from the background point, region tables, maps."""

import numpy as np
import pytest
import torch

from neurosepclr.analysis.saliency import (
    DistanceFromBackground,
    attribute,
    group_maps,
    hemisphere,
    map_image,
    region_table,
    saliency_rows,
)
from neurosepclr.atlases import Atlas


class BoxModel(torch.nn.Module):
    """A 'salient encoder' that only looks at one box of voxels (and a constant common space)."""

    def __init__(self, box):
        super().__init__()
        self.box = box
        self.weight = torch.nn.Parameter(torch.tensor([[1.0], [-2.0]]))

    def forward_features(self, x):
        z, y, w = self.box
        s = x[:, 0, z, y, w].flatten(1).mean(dim=1, keepdim=True) @ self.weight.T
        return torch.zeros(len(x), 1), s


BOX = (slice(2, 4), slice(1, 3), slice(3, 5))


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "occlusion"])
def test_attributions_fall_on_the_voxels_the_model_uses(method):
    torch.manual_seed(0)
    x = torch.randn(3, 1, 6, 5, 7) + 2.0
    model = BoxModel(BOX)
    result = attribute(
        model, x, torch.zeros(2), torch.zeros(1, 1, 6, 5, 7), method=method, batch_size=2, occlusion_size=1
    )
    assert result.shape == (3, 1, 6, 5, 7)  # one map per input channel
    result = result[:, 0]
    inside = np.zeros((6, 5, 7), bool)
    inside[BOX] = True
    absolute = np.abs(result)
    assert absolute[:, inside].sum() / absolute.sum() > 0.999


def test_integrated_gradients_are_complete():
    """Σ attributions = f(x) − f(baseline) (the completeness axiom of integrated gradients)."""
    torch.manual_seed(1)
    x = torch.randn(2, 1, 6, 5, 7)
    model = BoxModel(BOX)
    point = torch.tensor([0.3, -0.1])
    baseline = torch.full((1, 1, 6, 5, 7), 0.2)
    result = attribute(model, x, point, baseline, n_steps=64)
    target = DistanceFromBackground(model, point)
    expected = (target(x) - target(baseline.expand_as(x))).detach().numpy()
    np.testing.assert_allclose(result.reshape(2, -1).sum(axis=1), expected, rtol=2e-2, atol=1e-4)


class TwoBoxModel(torch.nn.Module):
    """Salient coordinate 0 reads box A, coordinate 1 reads box B."""

    def forward_features(self, x):
        a = x[:, 0, 0:2, 0:2, 0:2].flatten(1).mean(dim=1)
        b = x[:, 0, 4:6, 3:5, 5:7].flatten(1).mean(dim=1)
        return torch.zeros(len(x), 1), torch.stack([a, b], dim=1)


def test_controls_whitening_moves_attribution_away_from_what_controls_vary_in():
    torch.manual_seed(2)
    x = torch.randn(4, 1, 6, 5, 7) + 1.0
    baseline, point = torch.zeros(1, 1, 6, 5, 7), torch.zeros(2)
    box_a = np.zeros((6, 5, 7), bool)
    box_a[0:2, 0:2, 0:2] = True
    share_a = []
    for whitening in (None, torch.diag(torch.tensor([0.1, 1.0]))):  # controls vary 10x more along A
        result = np.abs(attribute(TwoBoxModel(), x, point, baseline, whitening=whitening, n_steps=64))[:, 0]
        share_a.append(result[:, box_a].sum() / result.sum())
        target = DistanceFromBackground(TwoBoxModel(), point, whitening)
        expected = (target(x) - target(baseline.expand_as(x))).detach().numpy()
        signed = attribute(TwoBoxModel(), x, point, baseline, whitening=whitening, n_steps=64)
        np.testing.assert_allclose(signed.reshape(4, -1).sum(axis=1), expected, rtol=2e-2, atol=1e-4)
    assert share_a[0] > 0.2 and share_a[1] < share_a[0] / 5


class SecondChannelModel(torch.nn.Module):
    """Two input channels (two features); the salient code reads a box of the second one only."""

    def forward_features(self, x):
        return torch.zeros(len(x), 1), x[:, 1, 2:4, 1:3, 3:5].flatten(1).mean(dim=1, keepdim=True)


def test_attributions_are_per_channel_and_complete_over_all_of_them():
    torch.manual_seed(3)
    x = torch.randn(2, 2, 6, 5, 7) + 1.0
    baseline, point = torch.zeros(1, 2, 6, 5, 7), torch.zeros(1)
    result = attribute(SecondChannelModel(), x, point, baseline, n_steps=64)
    assert result.shape == (2, 2, 6, 5, 7)
    assert np.abs(result[:, 0]).max() == 0 and np.abs(result[:, 1]).sum() > 0
    target = DistanceFromBackground(SecondChannelModel(), point)
    expected = (target(x) - target(baseline.expand_as(x))).detach().numpy()
    np.testing.assert_allclose(result.reshape(2, -1).sum(axis=1), expected, rtol=2e-2, atol=1e-4)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="saliency method"):
        attribute(
            BoxModel(BOX), torch.zeros(1, 1, 6, 5, 7), torch.zeros(2), torch.zeros(1, 1, 6, 5, 7), "lrp"
        )


def test_group_maps_mean_signed_and_z_against_controls():
    attributions = np.zeros((5, 2, 2, 2))
    attributions[0:2, 0, 0, 0] = [-2.0, -4.0]  # subtype A relies on voxel (0,0,0), negative sign
    attributions[2:5, 1, 1, 1] = [0.5, 1.0, 1.5]  # controls vary at (1,1,1)
    labels = np.array(["A", "A", "control", "control", "control"], dtype=object)
    maps = group_maps(attributions, labels, control_rows=labels == "control")
    assert set(maps) == {"A"}
    assert maps["A"]["saliency"][0, 0, 0] == 3.0
    assert maps["A"]["signed"][0, 0, 0] == -3.0
    assert maps["A"]["zmap"][0, 0, 0] > 0 > maps["A"]["zmap"][1, 1, 1]


@pytest.mark.parametrize(
    ("name", "x", "side"),
    [("Hippocampus_L", 30.0, "left"), ("ctx-rh-insula", -30.0, "right"), ("Left-Amygdala", 9.0, "left"),
     ("Vermis_4_5", 0.5, "midline"), ("Thalamus", -12.0, "left"), ("Region", 12.0, "right")],
)  # fmt: skip
def test_hemisphere_from_name_else_centroid(name, x, side):
    assert hemisphere(name, x) == side


def tiny_atlas():
    labels = np.zeros((8, 8, 8), np.int32)
    labels[:4, :, :] = 1  # x < 0 half (affine below puts voxel 0 at x = -8)
    labels[4:, :4, :] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -8.0
    return Atlas("toy", labels, affine, {1: "Lobe_L", 2: "Lobe_R"}, "toy licence")


def test_region_table_ranks_the_region_holding_the_saliency():
    atlas = tiny_atlas()
    saliency = np.zeros((8, 8, 8))
    saliency[5:, :3, :] = 1.0  # inside region 2
    table = region_table(saliency, -saliency, atlas.affine, atlas)
    assert list(table["region"]) == ["Lobe_R", "Lobe_L"]
    assert list(table["rank"]) == [1, 2]
    assert table.loc[0, "hemisphere"] == "right"
    assert table.loc[0, "share_abs_saliency"] == pytest.approx(1.0)
    assert table.loc[0, "mean_saliency"] < 0
    assert table["volume_mm3"].tolist() == [128 * 8, 256 * 8]  # 2 mm atlas voxels
    assert table["region_name"].tolist() == ["Lobe (right)", "Lobe (left)"]


def test_a_region_across_the_midline_is_midline_whatever_its_centroid():
    assert hemisphere("Lobule", 2.5, left_fraction=0.45) == "midline"
    assert hemisphere("Lobule", 2.5, left_fraction=0.05) == "right"
    assert hemisphere("Vermis_3", 4.0, left_fraction=0.1) == "midline"  # AAL3's lies mostly right of x = 0
    assert hemisphere("Brain-Stem", -3.0) == "midline"


def test_region_table_resamples_a_coarser_map_onto_the_atlas():
    atlas = tiny_atlas()
    coarse = np.zeros((4, 4, 4))
    coarse[0:2, :, :] = 1.0  # left half of the field of view, 4 mm voxels
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -7.0
    table = region_table(coarse, coarse, affine, atlas)
    assert table.loc[0, "region"] == "Lobe_L"


def test_maps_carry_the_template_affine_and_blank_text_fields():
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    image = map_image(np.ones((3, 3, 3)), affine)
    np.testing.assert_allclose(image.affine, affine)
    assert int(image.header["sform_code"]) == 4 and int(image.header["qform_code"]) == 4
    assert image.header["descrip"].item() == b""


def test_saliency_rows_cap_each_group_and_are_seeded():
    labels = np.array(["control"] * 50 + ["S1"] * 30 + ["S2"] * 3, dtype=object)
    controls = labels == "control"
    np.testing.assert_array_equal(saliency_rows(labels, controls, 0, seed=0), np.arange(83))
    rows = saliency_rows(labels, controls, 10, seed=0)
    chosen, counts = np.unique(labels[rows], return_counts=True)
    assert dict(zip(chosen, counts, strict=True)) == {"control": 10, "S1": 10, "S2": 3}  # S2 whole
    assert (np.diff(rows) > 0).all()  # row order, no repeats
    np.testing.assert_array_equal(rows, saliency_rows(labels, controls, 10, seed=0))
    assert not np.array_equal(rows, saliency_rows(labels, controls, 10, seed=1))


def test_mean_volume_reads_in_chunks_and_equals_the_mean():
    from neurosepclr.training.data import mean_volume

    volumes = torch.randn(10, 2, 3, 4, 5)
    rows = np.array([0, 3, 4, 8, 9])
    expected = volumes[torch.from_numpy(rows)].mean(dim=0, keepdim=True)
    torch.testing.assert_close(mean_volume(volumes, rows, chunk=2).float(), expected)
