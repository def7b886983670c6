"""Every encoder on a batch: shapes, finite outputs, independent weights, heads."""

import pytest
import torch

from neurosepclr.config import load_config
from neurosepclr.errors import ConfigError
from neurosepclr.models import ENCODERS, LightCNN3d, ProjectionHead, build_encoder, build_model


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_maps_a_volume_to_its_representation(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, 12)
    out = encoder(torch.randn(2, 1, 32, 36, 32))
    assert out.shape == (2, 12) and torch.isfinite(out).all()


def test_sepclr_net_has_two_independent_encoders_and_heads():
    cfg = load_config(None, ["model.widths=[4, 8]", "model.common_dim=6", "model.salient_dim=5"]).model
    model = build_model(cfg)
    x = torch.randn(3, 1, 16, 16, 16)
    out = model(x)
    assert out.common_rep.shape == (3, 6) and out.salient_rep.shape == (3, 5)
    assert out.common_proj.shape == (3, 6) and out.salient_proj.shape == (3, 5)
    common_params = {id(p) for p in model.common_encoder.parameters()}
    assert not common_params & {id(p) for p in model.salient_encoder.parameters()}
    torch.testing.assert_close(model.forward_features(x)[0], out.common_rep)


def test_projection_head_layout():
    head = ProjectionHead(32)
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head[0].out_features == 128 and head[3].out_features == 32


def _blob_at(corner: tuple[int, int, int], size: int = 48) -> torch.Tensor:
    volume = torch.zeros(1, 1, size, size, size, dtype=torch.float64)
    x, y, z = corner
    volume[..., x : x + 3, y : y + 3, z : z + 3] = 1.0
    return volume


def test_global_pooling_is_blind_to_where_a_pattern_is_and_pool_cells_is_not():
    """The same blob in two octants, 24 voxels apart (a multiple of the 3 max-pools' stride 8) and
    away from the borders: global average pooling gives the same features, pool_cells=2 does not."""
    left, right = _blob_at((8, 16, 16)), _blob_at((32, 16, 16))
    for cells, same in ((1, True), (2, False)):
        torch.manual_seed(0)
        encoder = LightCNN3d(8, widths=(4, 8, 8), pool_cells=cells).double().eval()
        with torch.no_grad():
            a, b = (encoder.pool(encoder.features(v)).flatten(1) for v in (left, right))
        assert a.shape == (1, 8 * cells**3)
        assert torch.allclose(a, b, atol=1e-10) is same


def test_pool_cells_sizes_the_last_layer_and_is_refused_for_monai_encoders():
    encoder = build_encoder("light_cnn", 12, widths=(4, 8), pool_cells=3)
    assert encoder.fc.in_features == 8 * 27
    assert encoder(torch.randn(2, 1, 20, 24, 20)).shape == (2, 12)
    with pytest.raises(ValueError, match="pool_cells"):
        build_encoder("resnet10", 12, pool_cells=2)
    with pytest.raises(ConfigError, match=r"model\.pool_cells"):
        load_config(None, ["model.encoder=resnet10", "model.pool_cells=2"])


def test_average_downsampling_keeps_a_weak_extended_change_that_max_pooling_hides():
    import torch.nn as nn

    maxed = build_encoder("light_cnn", 4, widths=(2, 2), downsample="max")
    averaged = build_encoder("light_cnn", 4, widths=(2, 2), downsample="avg")
    assert sum(isinstance(m, nn.MaxPool3d) for m in maxed.features) == 2
    assert sum(isinstance(m, nn.AvgPool3d) for m in averaged.features) == 2
    assert not any(isinstance(m, nn.MaxPool3d) for m in averaged.features)
    # same parameters either way: checkpoints do not depend on the choice
    assert [k for k, _ in maxed.named_parameters()] == [k for k, _ in averaged.named_parameters()]
    # a 2x2x2 cell holding one high voxel among zeros (a spike) vs a cell uniformly at its mean
    pooling = {"max": maxed.features[3], "avg": averaged.features[3]}
    spike, uniform = torch.zeros(1, 1, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 1.0 / 8)
    spike[0, 0, 0, 0, 0] = 1.0
    assert torch.allclose(pooling["avg"](spike), pooling["avg"](uniform))
    assert not torch.allclose(pooling["max"](spike), pooling["max"](uniform))
    with pytest.raises(ValueError, match="downsample"):
        build_encoder("resnet10", 12, downsample="avg")
    with pytest.raises(ConfigError, match=r"model\.downsample"):
        load_config(None, ["model.encoder=resnet10", "model.downsample=avg"])
    assert load_config(None, ["model.downsample=avg"]).model.downsample == "avg"


def test_members_concatenate_and_each_member_gets_only_its_own_objective_gradient():
    from neurosepclr.objectives import member_mean
    from neurosepclr.objectives.sepclr import SepCLRLoss

    torch.manual_seed(0)
    overrides = ["model.widths=[4, 8]", "model.common_dim=6", "model.salient_dim=5", "model.members=2"]
    model = build_model(load_config(None, overrides).model)
    out = model(torch.randn(8, 1, 16, 16, 16))
    assert out.common_rep.shape == (8, 12) and out.salient_proj.shape == (8, 10)
    is_target = torch.tensor([0, 1] * 4, dtype=torch.bool)
    loss = SepCLRLoss()
    halves = out.common_proj.chunk(2), out.salient_proj.chunk(2)  # two "views" of four subjects
    c1, c2, s1, s2 = (*halves[0], *halves[1])
    first_member = model.salient_encoder.members[0]
    ensemble = torch.autograd.grad(
        member_mean(loss, 2, c1, c2, s1, s2, is_target[:4]).total,
        list(first_member.parameters()),
        retain_graph=True,
    )
    alone = torch.autograd.grad(
        loss(c1[:, :6], c2[:, :6], s1[:, :5], s2[:, :5], is_target[:4]).total, list(first_member.parameters())
    )
    for g_ensemble, g_alone in zip(ensemble, alone, strict=True):
        torch.testing.assert_close(g_ensemble, g_alone / 2)


def test_one_member_keeps_the_checkpoint_layout_and_members_refuse_prototypes():
    keys = build_model(load_config(None, ["model.widths=[4, 8]"]).model).state_dict()
    assert not any(".members." in key for key in keys)  # checkpoints of earlier versions still load
    with pytest.raises(ConfigError, match="members"):
        load_config(None, ["model.members=2", "loss.salient_prototypes=4"])


def test_member_views_route_one_block_of_rows_to_each_member():
    torch.manual_seed(0)
    overrides = ["model.widths=[4, 8]", "model.salient_dim=5", "model.members=2"]
    model = build_model(load_config(None, overrides).model).eval()
    first, second = torch.randn(3, 1, 16, 16, 16), torch.randn(3, 1, 16, 16, 16)
    out = model(torch.cat([first, second]), member_views=True)
    members = model.salient_encoder.members
    torch.testing.assert_close(out.salient_rep, torch.cat([members[0](first), members[1](second)], dim=1))
    torch.testing.assert_close(  # inference: every member reads the same subjects
        model.forward_features(first)[1], torch.cat([members[0](first), members[1](first)], dim=1)
    )
