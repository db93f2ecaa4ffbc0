"""smi-synth: synthetic image corpora from Vision Transformers by sparse model inversion.

The public API, importable from ``pipeline`` whatever the internal layout::

    from pipeline import load_corpus, load_spec, run_corpus, verify_corpus, corpus_status

Subpackages: ``corpus`` (layout, storage seam, writer, index, dataset card, loading, verify, status),
``run`` (spec, plan, worker, Ray runner, demo), ``teachers`` (loading, the toy teacher and its data),
``evaluate`` (distill, quantize, held-out evaluation, KD views), ``hub`` (publish, previews) and
``bench``. Names are imported on first use, so ``import pipeline`` stays light.
"""

from importlib import import_module

_EXPORTS = {
    "load_corpus": "pipeline.corpus.loader",
    "iter_samples": "pipeline.corpus.loader",
    "verify_corpus": "pipeline.corpus.verify",
    "corpus_status": "pipeline.corpus.status",
    "CorpusLayout": "pipeline.corpus.layout",
    "load_spec": "pipeline.run.spec",
    "spec_from_dict": "pipeline.run.spec",
    "RunSpec": "pipeline.run.spec",
    "run_corpus": "pipeline.run.runner",
    "load_teacher": "pipeline.teachers.loading",
    "publish": "pipeline.hub.publish",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
