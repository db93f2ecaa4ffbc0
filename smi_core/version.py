"""The engine's version: which inversion arithmetic produced a corpus.

Bump :data:`ENGINE_VERSION` in the same commit as any change to ``smi_core`` that changes what
:func:`smi_core.invert` computes for the same inputs (losses, selection, augmentation, optimiser
steps, initialisation, the order of random draws): it is part of every corpus's spec hash, so a
corpus started under one engine is never resumed under another. ``tests/run/test_engine_version.py``
pins a tiny inversion's output for the current version and fails when the arithmetic changes without
a bump.
"""

ENGINE_VERSION = 2  # 2: the pyramid composed by matrices (levels moved by the adjoint), TV with a written-out gradient, fused Adam
