"""``smi-synth demo`` (``make demo``): the embedded default, end to end on this machine.

Runs ``manifests/demo.yaml`` (built-in toy teacher, local Ray, CPU): builds the teacher on first use,
generates the corpus, verifies it, and says where it is, what was measured and how to load it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.corpus.verify import verify_corpus
from pipeline.errors import UserError
from pipeline.run.runner import format_report, prebuild_toy_teacher, run_corpus
from pipeline.run.spec import load_spec

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "demo.yaml"


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
    print(f"verify: {'ok' if verdict.ok else 'BAD'} ({verdict.checked_shards} shards checked)")
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
