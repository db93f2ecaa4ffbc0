"""``smi-synth demo`` (``make demo``): the embedded default, end to end on this machine.

Runs ``manifests/demo.yaml`` (built-in toy teacher, local Ray, CPU): builds the teacher on first use,
generates the corpus, verifies it, then distils a small student from it and, the same way, from a
Gaussian-noise corpus of the same size (:func:`pipeline.evaluate.worth.corpus_worth`), and prints their
held-out top-1 next to the teacher's; then says where the corpus is and how to load it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.corpus.verify import verify_corpus
from pipeline.errors import UserError
from pipeline.evaluate.common import corpus_info, eval_source, format_top1
from pipeline.evaluate.kd_views import KDAugmentConfig
from pipeline.evaluate.worth import Worth, WorthSettings, corpus_worth
from pipeline.run.runner import format_report, prebuild_toy_teacher, run_corpus
from pipeline.run.spec import load_spec
from pipeline.teachers.loading import load_teacher

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "demo.yaml"
# The demo's distillation, in one place (the corpus's size is manifests/demo.yaml's images_per_class):
# student None = pipeline.evaluate.defaults.default_student; the library's views but no adversarial views
# (they cost 2.5x per step on this corpus); the corpus's and the noise corpus's students train at once, each
# in its own process on one core. 1,200 steps at lr 3e-2 (the library's 1e-2 suits its longer budgets) keep
# the whole demo within 5 minutes: on the demo corpus, distillation seeds 0-3 gave 64.2/71.4/63.65/65.3%
# (mean 66.1%) in about 106 s, where 2,000 steps at 1e-2 gave 65.8% (seed 0) in 175 s and 1,000 steps at
# 1e-2 57.3/58.25% (BENCHMARKS.md, "Demo").
DEMO_DISTILL = WorthSettings(student=None, steps=1200, batch_size=64, lr=3e-2, seed=0,
                             augment=KDAugmentConfig(adversarial_eps=0.0), parallel=True)


def cmd_demo(args: argparse.Namespace) -> int:
    if not DEMO_MANIFEST.is_file():
        raise UserError(f"{DEMO_MANIFEST}: the demo manifest is missing (run from a source checkout)")
    start = time.perf_counter()
    spec = load_spec(DEMO_MANIFEST).with_output(args.out or "demo-out")
    print(f"smi-synth demo: {spec.num_images} images ({len(spec.classes)} classes x {spec.images_per_class}) "
          f"from the built-in toy teacher, method {spec.method}, {spec.inversion_config().iterations} iterations, "
          f"local Ray on the CPU", flush=True)
    t0 = time.perf_counter()
    info = prebuild_toy_teacher(sys.stderr.isatty())
    print(f"toy teacher ready in {time.perf_counter() - t0:.1f} s "
          f"(held-out top-1 {100 * float(info.get('heldout_top1', 0)):.1f}%)", flush=True)
    report = run_corpus(spec, show_progress=sys.stderr.isatty())
    print(format_report(report), flush=True)
    verdict = verify_corpus(spec.output)
    print(f"verify: {'ok' if verdict.ok else 'BAD'} ({verdict.checked_shards} shards checked)", flush=True)
    if report.ok and verdict.ok:
        print(format_worth(demo_worth(spec.output, sys.stderr.isatty())), flush=True)
    out = spec.output
    print(f"""
demo finished in {time.perf_counter() - start:.1f} s. The corpus is in {out}
  data/*.tar (WebDataset shards), metadata/*.parquet, stats/*.json, manifest.json
Load it:
  from pipeline import load_corpus
  for image, label in load_corpus("{out}"): ...
  # or with Hugging Face datasets:
  datasets.load_dataset("webdataset", data_files={{"train": "{out}/data/*.tar"}}, split="train")
Next: smi-synth status {out} | smi-synth verify {out} | smi-synth preview {out}""")
    return 0 if report.ok and verdict.ok else 1


def demo_worth(out: Path | str, show_progress: bool = False) -> Worth:
    """:data:`DEMO_DISTILL`'s students from the demo corpus and from noise, scored on the toy held-out split."""
    info = corpus_info(out)
    teacher = load_teacher("toy")  # built (or read from the cache) before the corpus was generated
    eval_set = eval_source("toy", class_ids=info.class_ids, img_size=info.img_size)
    if eval_set is None:
        raise UserError(f"{out}: no toy held-out images for this corpus's classes")
    steps = DEMO_DISTILL.steps
    print(f"distilling two {DEMO_DISTILL.student or 'default'} students against the live toy teacher"
          f"{f' for {steps} steps each' if steps else ''}, at once: one from the corpus, one from Gaussian noise ...",
          flush=True)
    return corpus_worth(out, teacher, eval_set, DEMO_DISTILL, show_progress=show_progress)


def format_worth(worth: Worth) -> str:
    """The demo's few lines: held-out top-1 of the teacher and of both students."""
    return "\n".join([
        (f"what the corpus teaches (held-out top-1 on {worth.eval_images:,} real toy images; {worth.student} "
         f"students, {worth.steps} steps each, {worth.distill_seconds:.0f} s for both):"),
        f"  toy teacher                                        {format_top1(worth.teacher_top1):>7}",
        f"  student distilled from the demo corpus             {format_top1(worth.corpus_top1):>7}",
        (f"  student distilled from Gaussian noise (baseline)   {format_top1(worth.noise_top1):>7}"
         f"   ({worth.corpus_images} noise images, trained the same way; chance {100 / max(1, worth.num_classes):.0f}%)"),
    ])
