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


def test_removed_options_are_refused_in_new_configs_and_dropped_from_old_run_folders(tmp_path):
    """Decision 0007: unproven options were removed; a run folder that kept them at their no-op value
    still loads, one that used them is refused with a pointer to the decision."""
    for key in (
        "model.members=2",
        "model.downsample=avg",
        "loss.gamma_uniform=0.5",
        "train.augment.cutout=0.1",
    ):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config(None, [key])
    old = tmp_path / "config.yaml"
    old.write_text("model:\n  members: 1\n  downsample: max\nloss:\n  gamma_uniform: 1.0\n  proto_tau: 0.1\n")
    assert load_config(old).model.encoder == "light_cnn"
    old.write_text("model:\n  members: 3\n")
    with pytest.raises(ConfigError, match=r"model\.members.*0007"):
        load_config(old)
    keys = build_model(load_config(None, ["model.widths=[4, 8]"]).model).state_dict()
    assert not any(".members." in key for key in keys)  # checkpoints of earlier versions still load
