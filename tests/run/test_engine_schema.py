"""The manifest's ``inversion`` section is derived from smi_core.config (pipeline.run.engine_schema): fields
added to the engine config become manifest fields, checked, recorded and hashed, with no change in pipeline/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pipeline.run.spec as spec_mod
from pipeline.run.engine_schema import SELECTION_NAMES, SMI_ONLY_FIELDS, InversionSpec
from tests.run.fake_teacher import fake_describe
from tests.run.test_spec import BASE, PAPER_RECIPE, merged

REPO = Path(__file__).resolve().parents[2]

# fields added to smi_core/config.py: class -> lines put before its __post_init__ (each with a default)
ADDED = {
    "StopSchedule": "    warmup: int = 0\n",
    "SelectionConfig": "    temperature: float = 1.0\n",
    "LossWeights": "    new_weight: float = 0.0\n",
    "AugmentConfig": '    mode: Literal["a", "b"] = "a"\n',
    "InversionConfig": "    extra: ExtraPart = field(default_factory=ExtraPart)\n"
                       "    clip: tuple[float, float] | None = None\n",
}
NEW_PART = '''@dataclass(frozen=True)
class ExtraPart:
    level: int = 0
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level < 0:
            raise ValueError(f"extra.level: must be >= 0, got {self.level}")


'''
# manifests whose spec hash a new field at its default must not change (a path: a shipped manifest)
KEPT: dict[str, Any] = {"smi": merged(BASE, {"inversion": PAPER_RECIPE}),
                        "dense": merged(BASE, {"inversion": {**PAPER_RECIPE, "method": "dense"}}), "recommended": BASE,
                        **{p.stem: str(p) for p in sorted((REPO / "manifests").glob("*.yaml"))}}
WRITTEN = {"schedule": {"warmup": 5}, "temperature": 0.5, "loss": {"new_weight": 2}, "augment": {"mode": "b"},
           "extra": {"level": 3, "names": ["x", "y"]}, "clip": [0.1, 0.9]}
BAD = {
    "temperature: x": ({"temperature": "x"}, "inversion.temperature: expected a number, got string 'x'"),
    "extra.level: -1": ({"extra": {"level": -1}}, "inversion.extra.level: must be >= 0, got -1"),
    "extra typo": ({"extra": {"lvl": 1}}, "inversion.extra: unknown field 'lvl' (did you mean 'level'?)"),
    "augment.mode: c": ({"augment": {"mode": "c"}}, "inversion.augment.mode: expected 'a' or 'b', got 'c'"),
    "clip: [0.1]": ({"clip": [0.1]}, "inversion.clip: expected 2 items, got 1"),
    "extra.names: [1]": ({"extra": {"names": [1]}}, "inversion.extra.names.0: expected a string, got integer 1"),
    "schedule.warmup: null": ({"schedule": {"warmup": None}}, "inversion.schedule.warmup: must not be null"),
}

# run against the extended smi_core: loads manifests and prints what the parent checks, as JSON
SCRIPT = '''
import dataclasses, json, sys
import pipeline.run.spec as spec_mod
from pipeline.errors import UserError
from tests.run.fake_teacher import fake_describe
spec_mod._describe_teacher = fake_describe
kept, written, bad, base = json.loads(sys.stdin.read())
def load(data):
    if isinstance(data, str):
        return spec_mod.load_spec(data)
    return spec_mod.spec_from_dict(data, base_dir=".", label="m")

with_new = lambda method: load({**base, "inversion": {**base["inversion"], **written, "method": method}})
out = {"hashes": {k: load(v).spec_hash() for k, v in kept.items()}, "errors": {}}
smi, dense = with_new("smi"), with_new("dense")
cfg = smi.inversion_config()
out["config"] = [cfg.selection.schedule.warmup, cfg.selection.temperature, cfg.loss.new_weight, cfg.augment.mode,
                 dataclasses.asdict(cfg.extra), cfg.clip]
out["resolved"], out["hashed"] = smi.resolved()["inversion"], smi.hashed_fields()["inversion"]
out["dense_hashed"] = dense.hashed_fields()["inversion"]
out["round_trip"] = load({**base, "inversion": out["resolved"]}).inversion_config() == cfg
for name, (patch, _) in bad.items():
    try:
        load({**base, "inversion": {**base["inversion"], **patch}})
        out["errors"][name] = "accepted"
    except UserError as exc:
        out["errors"][name] = str(exc)
print(json.dumps(out))
'''


def _extended_smi_core(root: Path) -> Path:
    """A copy of smi_core whose config.py has the fields of ADDED and NEW_PART."""
    shutil.copytree(REPO / "smi_core", root / "smi_core", ignore=shutil.ignore_patterns("__pycache__"))
    config = root / "smi_core" / "config.py"
    text = config.read_text()
    for cls, lines in ADDED.items():
        start = text.index(f"class {cls}:")
        at = text.index("    def __post_init__", start)
        text = text[:at] + lines + "\n" + text[at:]
    text = text.replace("@dataclass(frozen=True)\nclass InversionConfig:", NEW_PART + "@dataclass(frozen=True)\n"
                        "class InversionConfig:")
    config.write_text(text)
    return root


@pytest.fixture
def fake_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)


def test_fields_added_to_the_engine_config_need_nothing_in_the_pipeline(tmp_path: Path, fake_teacher: None) -> None:
    """smi_core/config.py gains a field in each of its dataclasses and a new nested one; pipeline/ is unchanged:
    manifests write the new fields (checked, and their errors name them), the config, manifest.json's section
    and the spec hash carry them, a dense hash leaves the new selection field out, and every existing hash
    stays what it was (a field at its default is not hashed)."""
    today = {k: (spec_mod.load_spec(v) if isinstance(v, str) else spec_mod.spec_from_dict(v, label="m")).spec_hash()
             for k, v in KEPT.items()}
    assert len(today) == 5
    root = _extended_smi_core(tmp_path / "extended")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}
    payload = json.dumps([KEPT, WRITTEN, BAD, BASE])
    done = subprocess.run([sys.executable, "-c", SCRIPT], input=payload, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert out["hashes"] == today
    assert out["config"] == [5, 0.5, 2.0, "b", {"level": 3, "names": ["x", "y"]}, [0.1, 0.9]]
    resolved = out["resolved"]
    assert resolved["schedule"]["warmup"] == 5 and resolved["temperature"] == 0.5 and resolved["clip"] == [0.1, 0.9]
    assert resolved["loss"]["new_weight"] == 2.0 and resolved["augment"]["mode"] == "b"
    assert resolved["extra"] == {"level": 3, "names": ["x", "y"]} and out["round_trip"]
    for path in ("schedule.warmup", "temperature", "loss.new_weight", "augment.mode", "extra.level", "clip"):
        head, _, leaf = path.partition(".")
        assert (out["hashed"][head][leaf] if leaf else out["hashed"][head]) is not None, path
    assert "temperature" not in out["dense_hashed"] and "schedule" not in out["dense_hashed"]
    assert out["dense_hashed"]["extra"] == {"level": 3, "names": ["x", "y"]}
    for name, (_, message) in BAD.items():
        assert re.fullmatch(rf"m: {re.escape(message)}.*", out["errors"][name]), (name, out["errors"][name])


def test_the_selection_sits_at_the_top_under_its_manifest_names() -> None:
    """The one explicit mapping: selection.kind is `method`, selection.stopped is `stopped_patches`; a dense
    run's hash leaves out every selection field but the method."""
    assert SELECTION_NAMES == {"kind": "method", "schedule": "schedule", "stopped": "stopped_patches",
                               "saliency": "saliency", "rejoin": "rejoin"}
    assert SMI_ONLY_FIELDS == ("schedule", "stopped_patches", "saliency", "rejoin")
    assert "selection" not in InversionSpec.model_fields
    assert set(SELECTION_NAMES.values()) | {"batch_size", "pack_batches"} <= set(InversionSpec.model_fields)
