"""neurosepclr: contrastive analysis (SepCLR) of 3D structural MRI.

Two 3D encoders are trained so that a *common* space holds the variability patients share with
controls and a *salient* space holds only what is specific to patients (Louiset et al., ICLR 2024).
Patients are then clustered into subtypes in the salient space.

Heavy dependencies (torch, MONAI, nilearn) are imported by the sub-packages that need them, never
here, so that ``import neurosepclr`` and ``neurosepclr --help`` stay fast.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
