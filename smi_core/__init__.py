"""smi_core: sparse model inversion of timm Vision Transformers, pure PyTorch.

Knows nothing of files, Ray or the Hub; devices, dtypes and generators are passed in.
"""

from smi_core.config import AugmentConfig, InversionConfig, LossWeights, SelectionConfig, StopSchedule
from smi_core.inversion import invert
from smi_core.result import InversionResult
from smi_core.selection import make_policy, tokens_per_iteration
from smi_core.vit import ViTGeometry, forward_subset, vit_geometry

__all__ = [
    "AugmentConfig",
    "InversionConfig",
    "InversionResult",
    "LossWeights",
    "SelectionConfig",
    "StopSchedule",
    "ViTGeometry",
    "forward_subset",
    "invert",
    "make_policy",
    "tokens_per_iteration",
    "vit_geometry",
]
