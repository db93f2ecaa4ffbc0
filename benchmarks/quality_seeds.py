"""Summarise ``benchmarks/quality.py`` runs over seeds: per-seed rows, mean and spread, targets on the means.

One distillation moves by a few points from seed to seed, so a single run cannot settle "SMI within
1 point of dense". Run ``quality.py`` once per ``--seed`` (on one machine or several; each writes
``OUT/quality.json``), then:

    .venv/bin/python benchmarks/quality_seeds.py /tmp/q-s0/quality.json /tmp/q-s1/quality.json ...

Corpora are matched by seed. A dense row may come from a run with another SMI schedule: a dense
inversion ignores the schedule and the stopped pixels (the spec hash leaves them out too). Any other
difference in settings between the rows of one corpus is refused (exit 2), as is a seed given twice.
``FILE:dense`` (or ``FILE:dense,noise``) takes only those corpora from a file, e.g. the dense student
of a run whose SMI student used another schedule. The SMI - dense gap is paired per seed. The last
stdout line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.corpus.index import FIELDS_ADDED_LATER  # noqa: E402
from pipeline.run.engine_schema import SMI_ONLY_FIELDS  # noqa: E402

CORPORA = ("noise", "dense", "smi", "real")
SETTINGS = ("teacher_recipe", "teacher_patch", "teacher_top1", "iterations", "epochs", "student", "labels",
            "adversarial_eps", "images_per_corpus", "eval_images")
# two-sided 95% Student t quantiles by degrees of freedom (for the paired gap's interval)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


class SummaryError(ValueError):
    """Results that cannot be summarised together."""


def corpus_settings(result: dict[str, Any], corpus: str) -> dict[str, Any]:
    """The settings of ``result`` that determine ``corpus``'s student (SMI-only ones only for ``smi``)."""
    settings = {k: result.get(k) for k in SETTINGS}
    inversion = {**FIELDS_ADDED_LATER, **result.get("inversion", {})}  # results from before an option
    if corpus != "smi":
        for k in SMI_ONLY_FIELDS:
            inversion.pop(k, None)
    settings["inversion"] = inversion
    return settings


def collect(results: list[dict[str, Any]], corpus: str) -> dict[int, dict[str, Any]]:
    """``{seed: row}`` of ``corpus`` over ``results`` (rows without a student are skipped)."""
    rows: dict[int, dict[str, Any]] = {}
    settings: dict[str, Any] | None = None
    for result in results:
        row = result.get("corpora", {}).get(corpus, {})
        if "student_top1" not in row:
            continue
        if "seed" not in result:
            raise SummaryError("a result has no 'seed': write it with this version of benchmarks/quality.py")
        these = corpus_settings(result, corpus)
        if settings is None:
            settings = these
        elif these != settings:
            differ = sorted(k for k in set(settings) | set(these) if settings.get(k) != these.get(k))
            raise SummaryError(f"{corpus}: results differ in {', '.join(differ)}: {settings} vs {these}")
        seed = int(result["seed"])
        if seed in rows:
            raise SummaryError(f"{corpus}: seed {seed} is given twice")
        # the run's own SMI / dense time ratio: both were generated side by side in that run
        rows[seed] = {**row, "teacher_top1": result["teacher_top1"], "time_ratio": result["smi_vs_dense_time"]}
    return rows


def far_above_noise(worst_inverted: float, best_noise: float) -> bool:
    """The worst inverted-corpus student at least 20 points above the best noise-corpus student."""
    return worst_inverted >= best_noise + 0.20


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired dense / SMI summary over the seeds both corpora were distilled on; targets judged on the means."""
    dense, smi = collect(results, "dense"), collect(results, "smi")
    seeds = sorted(set(dense) & set(smi))
    if not seeds:
        raise SummaryError(f"no seed has both a dense and an SMI student (dense: {sorted(dense)}, smi: {sorted(smi)})")
    per_seed = []
    for s in seeds:
        d, m = dense[s], smi[s]
        per_seed.append({"seed": s, "dense_top1": d["student_top1"], "smi_top1": m["student_top1"],
                         "gap": m["student_top1"] - d["student_top1"],
                         "smi_vs_teacher": m["student_top1"] / max(m["teacher_top1"], 1e-9),
                         "time_ratio": m["time_ratio"]})
    stats = {k: spread([r[k] for r in per_seed]) for k in ("dense_top1", "smi_top1", "gap", "smi_vs_teacher", "time_ratio")}
    gap = stats["gap"]
    n = len(seeds)
    half = T95[n - 1] * gap["sd"] / math.sqrt(n) if 1 < n <= len(T95) + 1 else None
    noise = collect(results, "noise")
    summary = {
        "seeds": seeds, "per_seed": per_seed, "stats": stats,
        "gap_95ci": [gap["mean"] - half, gap["mean"] + half] if half is not None else None,
        "noise_top1": spread([r["student_top1"] for r in noise.values()]) if noise else None,
        "unpaired": {"dense": sorted(set(dense) - set(seeds)), "smi": sorted(set(smi) - set(seeds))},
        "settings": {"dense": corpus_settings(results[0], "dense"), "smi_inversion": next(
            (r["inversion"] for r in results if "student_top1" in r.get("corpora", {}).get("smi", {})), None)},
    }
    targets = {"smi_within_1pt_of_dense": gap["mean"] >= -0.01,
               "smi_student_at_least_80pct_teacher": stats["smi_vs_teacher"]["mean"] >= 0.80,
               "smi_time_at_most_40pct": stats["time_ratio"]["mean"] <= 0.40}
    if noise:
        best_noise = max(r["student_top1"] for r in noise.values())
        worst = min(stats["dense_top1"]["min"], stats["smi_top1"]["min"])
        targets["far_above_noise"] = far_above_noise(worst, best_noise)
    summary["targets_met_on_means"] = targets
    return summary


def _table(summary: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:7.2f}%"  # noqa: E731
    lines = [f"{'seed':>6} {'dense':>8} {'SMI':>8} {'SMI-dense':>10} {'SMI/teacher':>12} {'time':>7}"]
    for r in summary["per_seed"]:
        lines.append(f"{r['seed']:>6} {pct(r['dense_top1'])} {pct(r['smi_top1'])} {100 * r['gap']:+9.2f}pt "
                     f"{pct(r['smi_vs_teacher'])}    {pct(r['time_ratio'])}")
    s = summary["stats"]
    lines.append(f"{'mean':>6} {pct(s['dense_top1']['mean'])} {pct(s['smi_top1']['mean'])} "
                 f"{100 * s['gap']['mean']:+9.2f}pt {pct(s['smi_vs_teacher']['mean'])}    {pct(s['time_ratio']['mean'])}")
    lines.append(f"{'sd':>6} {100 * s['dense_top1']['sd']:7.2f}  {100 * s['smi_top1']['sd']:7.2f}  "
                 f"{100 * s['gap']['sd']:9.2f}pt")
    if summary["gap_95ci"]:
        low, high = summary["gap_95ci"]
        lines.append(f"SMI - dense, 95% interval over {len(summary['seeds'])} seeds: {100 * low:+.2f} to {100 * high:+.2f} pt")
    if summary["noise_top1"]:
        lines.append(f"noise student: {100 * summary['noise_top1']['mean']:.2f}% (mean of {summary['noise_top1']['n']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+",
                   help="quality.json files (or logs whose last line is its JSON); FILE:dense,noise takes only those corpora")
    args = p.parse_args(argv)
    results = []
    for given in args.results:
        path, only = Path(given), None
        name, _, suffix = given.rpartition(":")
        if name and suffix and set(suffix.split(",")) <= set(CORPORA):
            path, only = Path(name), suffix.split(",")
        try:
            lines = path.read_text().strip().splitlines()
            result = json.loads(lines[-1] if lines else "")
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: {path}: not a quality.py result ({exc})", file=sys.stderr)
            return 2
        if only is not None:
            result["corpora"] = {k: v for k, v in result.get("corpora", {}).items() if k in only}
        results.append(result)
    try:
        summary = summarise(results)
    except SummaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_table(summary))
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
