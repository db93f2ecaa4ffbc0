"""smi_core: sparse model inversion of timm Vision Transformers, pure PyTorch.

Knows nothing of files, Ray or the Hub; devices, dtypes and generators are passed in. Names are
imported lazily so that ``smi_core.config`` (used when validating manifests) does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "AugmentConfig": "smi_core.config",
    "InversionConfig": "smi_core.config",
    "LossWeights": "smi_core.config",
    "SelectionConfig": "smi_core.config",
    "StopSchedule": "smi_core.config",
    "InversionResult": "smi_core.result",
    "IterationState": "smi_core.inversion",
    "invert": "smi_core.inversion",
    "invert_packed": "smi_core.inversion",
    "make_policy": "smi_core.selection",
    "tokens_per_iteration": "smi_core.selection",
    "ViTGeometry": "smi_core.vit",
    "forward_subset": "smi_core.vit",
    "vit_geometry": "smi_core.vit",
    "ENGINE_VERSION": "smi_core.version",
    "PAPER_STOP_FRACTIONS": "smi_core.recipe",
    "paper_stops": "smi_core.recipe",
    "recommended_config": "smi_core.recipe",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'smi_core' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
