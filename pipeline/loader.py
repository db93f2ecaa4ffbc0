"""Old import path of ``load_corpus`` (README and dataset cards before 0.2): a re-export only.

Use ``from pipeline import load_corpus``.
"""

from pipeline.corpus.loader import iter_samples, load_corpus

__all__ = ["iter_samples", "load_corpus"]
