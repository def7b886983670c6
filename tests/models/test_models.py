"""Every encoder on a batch: shapes, finite outputs, independent weights, heads."""

import pytest
import torch

from neurosepclr.config import load_config
from neurosepclr.models import ENCODERS, ProjectionHead, build_encoder, build_model


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
