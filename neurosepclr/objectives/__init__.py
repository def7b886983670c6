"""The SepCLR objective and the meta-data-aware options of the same group (docs/method.md)."""

from neurosepclr.objectives.kernels import (
    attribute_alignment,
    conditional_align,
    conditional_uniform,
    decoupled_uniformity,
    rbf_kernel,
    sup_align,
    y_aware_infonce,
)
from neurosepclr.objectives.sepclr import (
    ConditionalCommon,
    DecoupledCommon,
    InfoMaxCommon,
    NTXentCommon,
    SepCLRLoss,
    SepCLRTerms,
    YAwareCommon,
    loss_from_config,
)
from neurosepclr.objectives.terms import (
    align,
    background_energy,
    k_jem,
    mmd,
    nt_xent,
    null_background,
    pairwise_sq_dists,
    uniform,
)

__all__ = [
    "ConditionalCommon",
    "DecoupledCommon",
    "InfoMaxCommon",
    "NTXentCommon",
    "SepCLRLoss",
    "SepCLRTerms",
    "YAwareCommon",
    "align",
    "attribute_alignment",
    "background_energy",
    "conditional_align",
    "conditional_uniform",
    "decoupled_uniformity",
    "k_jem",
    "loss_from_config",
    "mmd",
    "nt_xent",
    "null_background",
    "pairwise_sq_dists",
    "rbf_kernel",
    "sup_align",
    "uniform",
    "y_aware_infonce",
]
