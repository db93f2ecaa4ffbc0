"""The ``smi-synth`` command line. Exit codes: 0 ok, 2 bad input, 1 failure.

Each subcommand lives in its own module as ``cmd_<name>(args) -> int``; modules are imported only
when their command runs, so ``smi-synth bench`` needs nothing beyond torch and timm.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import UserError
from pipeline.run.provenance import package_version

# command -> (module, function)
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("pipeline.run.plan", "cmd_plan"),
    "run": ("pipeline.run.runner", "cmd_run"),
    "status": ("pipeline.corpus.status", "cmd_status"),
    "verify": ("pipeline.corpus.verify", "cmd_verify"),
    "preview": ("pipeline.hub.preview", "cmd_preview"),
    "publish": ("pipeline.hub.publish", "cmd_publish"),
    "distill": ("pipeline.evaluate.distill", "cmd_distill"),
    "quantize": ("pipeline.evaluate.quantize", "cmd_quantize"),
    "bench": ("pipeline.bench.inversion", "cmd_bench"),
    "demo": ("pipeline.run.demo", "cmd_demo"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option's help, except for flags and options without a default
    (their help says what happens instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments, matching the contract; keep its one-line message.
    Every parser shows each option's default in its help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


JSON_HELP = "print one JSON object as the last line of standard output"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smi-synth", description="Synthetic image corpora by sparse model inversion.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"smi-synth {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plan", help="shards, images, FLOPs, storage and GPU-hours of a manifest")
    p.add_argument("manifest", help="run spec YAML (see manifests/README.md)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("run", help="generate a corpus (resumes an interrupted run)")
    p.add_argument("manifest", help="run spec YAML (see manifests/README.md)")
    p.add_argument("--out", help="output folder or object-storage URL such as s3://bucket/corpus (overrides the manifest's)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--workers", type=int, help="number of inversion actors (default: one per GPU, else sized to the CPUs)")
    p.add_argument("--allow-provenance-mismatch", action="store_true",
                   help="resume even though package versions, device, GPU model or teacher weights differ from "
                        "the corpus's (bytes may differ; recorded in manifest.json)")
    p.add_argument("--worker-start-timeout", type=float, metavar="SECONDS",
                   help="stop a starting worker that reports no progress for this long (default: the "
                        "manifest's resources.worker_start_timeout_s, 900)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("status", help="complete / pending shards of a corpus")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("verify", help="check every shard against its stats and the manifest")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--repair", action="store_true", help="unmark bad shards so the next run regenerates them")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("preview", help="per-class contact sheets under OUT/preview")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--per-class", type=int, default=16, help="images per class sheet")
    p.add_argument("--overlay", choices=("faint", "off"), default="faint",
                   help="faint: dim the patches SMI stopped early; off: show the images as stored")

    p = sub.add_parser("publish", help="dataset card and upload to the Hugging Face Hub")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--repo-id", help="Hub dataset repository, NAMESPACE/NAME (default: the manifest's hub.repo_id)")
    visibility = p.add_mutually_exclusive_group()
    visibility.add_argument("--private", action="store_true",
                            help="publish as a private dataset (the default when the manifest says hub.private)")
    visibility.add_argument("--public", action="store_true",
                            help="publish as a public dataset even if the manifest says hub.private: true")
    p.add_argument("--revision", help="branch to upload to (default: the repository's main branch)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be added, replaced and deleted on the Hub; writes nothing anywhere")
    p.add_argument("--delete-stale", action="store_true",
                   help="delete remote shards, metadata, stats and previews (corpus-layout names only) that "
                        "this corpus does not have")

    p = sub.add_parser("distill", help="data-free knowledge distillation from a corpus (torchrun for several GPUs)")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--student", help="timm model name, or 'toy-student' (a small ViT) (default: chosen for the "
                                     "corpus by pipeline.evaluate.defaults.default_student, and printed)")
    p.add_argument("--teacher", help="live teacher spec (default: the corpus's own teacher, from its manifest)")
    p.add_argument("--stored-labels", action="store_true",
                   help="learn from the soft labels stored in the corpus instead of a live teacher")
    p.add_argument("--eval", dest="eval_spec",
                   help="'toy' or an ImageFolder directory of real images (default: 'toy' for toy corpora, else none)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: sized to the corpus's images and "
                   "classes by pipeline.evaluate.defaults.step_budget, and printed)")
    p.add_argument("--epochs", type=int, help="passes over the corpus, instead of --steps")
    p.add_argument("--batch-size", type=int, default=64, help="corpus images per step (per rank under torchrun)")
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW peak learning rate (warm-up, then cosine)")
    p.add_argument("--temperature", type=float, default=4.0, help="KD softmax temperature")
    p.add_argument("--sparse", action="store_true", help="train on the kept tokens only")
    p.add_argument("--workers", type=int, help="DataLoader worker processes per rank (0: none; default: none when "
                   "the corpus fits in memory and one process trains, where it is decoded once, else 2)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="autocast forward passes: auto = on CUDA only (bfloat16, else float16 with a grad scaler)")
    p.add_argument("--save", metavar="DIR", help="write the trained student to DIR/model.safetensors + DIR/config.json")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="save the training state in DIR and resume from it when the same command runs again")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N", help="epochs between checkpoints")
    aug = p.add_argument_group("views labelled by the live teacher (not with --stored-labels)")
    aug.add_argument("--max-shift", type=int, default=0,
                     help="random shift in pixels, with a random flip (0: flip only; shifts that cut across the "
                          "teacher's patches relabel inverted images)")
    aug.add_argument("--colour-jitter", type=float, default=0.3, help="contrast/brightness jitter strength")
    aug.add_argument("--no-channel-shuffle", dest="channel_shuffle", action="store_false",
                     help="keep the colour channels in order")
    aug.add_argument("--adversarial-eps", type=float, default=1.0,
                     help="L2 size of the student-teacher adversarial views added to each batch (0: none)")
    aug.add_argument("--mix", type=float, default=1.0,
                     help="fraction of each batch mixed with another of its images, half mixup, half cutmix (0: none)")
    aug.add_argument("--fresh-views", type=float, default=1.0, metavar="F",
                     help="share of each step's views labelled afresh by the teacher, from that share of a batch "
                          "of corpus images; the rest are drawn from a pool of views it labelled earlier (1: no pool)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (each torchrun rank takes its LOCAL_RANK GPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the student's initialisation, data order and views")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("quantize", help="post-training quantization of the corpus's teacher, calibrated on the corpus "
                       "beside noise (and real images)")
    p.add_argument("out", help="corpus folder")
    p.add_argument("--model", help="teacher spec of the ViT to quantize (default: the corpus's own teacher)")
    p.add_argument("--eval", dest="eval_spec",
                   help="'toy' or an ImageFolder directory of real images (default: 'toy' for the toy teacher, else none)")
    p.add_argument("--real-calib", metavar="DIR",
                   help="ImageFolder of real images (disjoint from --eval): a third calibration set of the same size")
    p.add_argument("--calib-images", type=int, default=32, help="images per calibration set, drawn across all classes")
    p.add_argument("--bits", default="W8A8,W6A6,W4A8,W4A4", help="comma-separated weight/activation bit settings")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration draws (corpus, noise, real)")
    p.add_argument("--post-ln", choices=["reparam", "per_channel", "per_tensor"], default="reparam",
                   help="LayerNorm outputs: per-channel scales folded into the LayerNorm (RepQ-ViT), kept per channel, "
                        "or one scale per tensor")
    p.add_argument("--softmax", choices=["log2", "uniform"], default="log2", help="quantizer of the attention softmax")
    p.add_argument("--gelu", choices=["auto", "uniform", "twin"], default="auto",
                   help="quantizer of the GELU output (auto: the lower-MSE of uniform and twin-uniform, per layer)")
    p.add_argument("--save", metavar="DIR", help="write each corpus-calibrated model to DIR/<WxAy>/ "
                   "(model.safetensors + config.json)")
    p.add_argument("--load", metavar="DIR", help="score a model saved with --save (DIR/<WxAy>) instead of quantizing")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("bench", help="dense vs sparse inversion side by side in one process")
    p.add_argument("--quick", action="store_true", help="small model, few iterations: under a minute on CPU")
    p.add_argument("--model", help="timm model name (random weights), default depends on --quick/device")
    p.add_argument("--img-size", type=int, help="image size (default: the model's)")
    p.add_argument("--batch", type=int, help="images inverted at once (default depends on --quick/device)")
    p.add_argument("--iterations", type=int, help="inversion iterations (default depends on --quick)")
    p.add_argument("--stop-iterations", help="comma list, e.g. 50,100,200,300")
    p.add_argument("--stop-ratios", help="comma list, e.g. 0.3,0.3,0.3,0.3")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="bfloat16 runs under autocast (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and the random model")
    p.add_argument("--repeats", type=int, help="alternate dense/sparse this many times, keep each best time")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("demo", help="the embedded default: run manifests/demo.yaml on local Ray, CPU")
    p.add_argument("--out", help="output folder (default: demo-out)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    module_name, func_name = COMMANDS[args.command]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args))
    except UserError as exc:
        print(f"smi-synth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smi-synth {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI owns the last line of defence
        logging.getLogger("smi_synth").debug("failure", exc_info=True)
        print(f"smi-synth {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
