"""3D encoders, projection heads and the two-encoder SepCLR network."""

from neurosepclr.models.encoders import ENCODERS, LightCNN3d, build_encoder
from neurosepclr.models.sepclr_net import ProjectionHead, SepCLRNet, build_model

__all__ = ["ENCODERS", "LightCNN3d", "ProjectionHead", "SepCLRNet", "build_encoder", "build_model"]
