"""Manifest parsing and validation (pipeline.run.spec) and the `plan` CLI's handling of bad manifests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.run.spec as spec_mod
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.run.spec import load_spec, spec_from_dict
from smi_core import recommended_config
from tests.cli_stderr import cli_lines
from tests.run.fake_teacher import fake_describe

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture(autouse=True)
def fake_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_mod, "_describe_teacher", fake_describe)


BASE: dict[str, Any] = {  # leaves the recipe to the recommended one
    "teacher": "toy",
    "images_per_class": 4,
    "images_per_shard": 2,
    "inversion": {"iterations": 200, "schedule": {"iterations": [20, 40], "ratios": [0.3, 0.3]}},
    "output": "out",
}


# BASE with every recipe field spelled out at the values the defaults had before the recommended recipe
# (the SMI paper's): the pinned hashes below are this manifest's, unchanged since hash version 1
PAPER_RECIPE: dict[str, Any] = {
    "lr": 0.25, "betas": [0.5, 0.99], "stopped_patches": "frozen", "saliency": "instant", "keep_best": True,
    "loss": {"ce": 1.0, "tv_l1": 0.0, "tv_l2": 1e-4, "l2": 0.0, "bn_prior": 0.0, "patch_entropy": 0.0},
    "augment": {"enabled": True, "max_roll_fraction": 0.125, "flip": True},
    "pyramid": [],  # pixels only: the recommended recipe's coarse levels are not the paper's
    "rejoin": None,  # no dense finish: the recommended recipe's is not the paper's
}


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write(folder: Path, data: dict[str, Any] | str, name: str = "manifest.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


BAD_CASES: list[tuple[str, Any, str]] = [
    ("unknown key", {"imgs_per_class": 4}, "unknown field 'imgs_per_class' (did you mean 'images_per_class'?)"),
    ("nested unknown key", {"inversion": {"itrs": 5}}, "inversion: unknown field 'itrs'"),
    ("string count", {"images_per_class": "4"}, "images_per_class: expected an integer, got string '4'"),
    ("float count", {"images_per_shard": 2.0}, "images_per_shard: expected an integer"),
    ("bool count", {"images_per_class": True}, "images_per_class: expected an integer"),
    ("zero count", {"images_per_class": 0}, "images_per_class: must be > 0, got 0"),
    ("negative count", {"images_per_shard": -1}, "images_per_shard: must be > 0, got -1"),
    ("negative seed", {"seed": -3}, "seed: must be >= 0, got -3"),
    ("zero iterations", {"inversion": {"iterations": 0}}, "inversion.iterations: must be > 0"),
    ("class out of range", {"classes": [3, 10]}, "classes: class id 10 is outside the teacher's range 0..9"),
    ("range out of range", {"classes": {"start": 5, "stop": 11}}, "classes.stop: must be <= the teacher's 10"),
    ("empty range", {"classes": {"start": 5, "stop": 5}}, "classes: start must be < stop"),
    ("range typo", {"classes": {"start": 0, "end": 5}}, "classes: unknown field 'end'"),
    ("negative class", {"classes": [-1]}, "classes: class ids must be integers >= 0"),
    ("duplicate class", {"classes": [1, 1]}, "classes: duplicate class id 1"),
    ("classes word", {"classes": "some"}, "classes: expected 'all'"),
    ("missing checkpoint", {"teacher": "weights/missing.safetensors"}, "teacher: checkpoint file not found"),
    ("unknown timm model", {"teacher": "timm:nope"}, "teacher: unknown timm model"),
    ("output escapes", {"output": "../escape"}, "output: relative path '../escape' must name a folder inside"),
    ("output is the folder", {"output": "."}, "output: relative path '.'"),
    ("ratio >= 1", {"inversion": {"schedule": {"ratios": [0.3, 1.5]}}}, "inversion.schedule.ratios: every ratio"),
    ("unsorted stops", {"inversion": {"schedule": {"iterations": [40, 20]}}}, "inversion.schedule.iterations: "),
    ("stop past end", {"inversion": {"schedule": {"iterations": [20, 200]}}}, "inversion.schedule.iterations: stop"),
    ("ratio count", {"inversion": {"schedule": {"ratios": [0.3]}}}, "inversion.schedule.ratios: expected 2 ratios"),
    ("ratio type", {"inversion": {"schedule": {"ratios": [0.3, "x"]}}},
     "inversion.schedule.ratios.1: expected a number"),
    ("negative lr", {"inversion": {"lr": -0.1}}, "inversion.lr: must be positive"),
    ("infinite weight", {"inversion": {"loss": {"ce": float("inf")}}}, "inversion.loss.ce: must be a finite number"),
    ("null section", {"inversion": None}, "inversion: expected a mapping of fields, got null"),
    ("betas length", {"inversion": {"betas": [0.5]}}, "inversion.betas: expected 2 items, got 1"),
    ("negative loss", {"inversion": {"loss": {"tv_l2": -1.0}}}, "inversion.loss.tv_l2: weight must be a non-negative"),
    ("string loss", {"inversion": {"loss": {"ce": "one"}}}, "inversion.loss.ce: expected a number, got string"),
    ("roll fraction", {"inversion": {"augment": {"max_roll_fraction": 1.0}}}, "inversion.augment.max_roll_fraction"),
    ("method", {"inversion": {"method": "sparse"}}, "inversion.method: expected 'dense', 'smi' or 'rebirth'"),
    ("stopped patches", {"inversion": {"stopped_patches": "thawed"}},
     "inversion.stopped_patches: expected 'frozen' or 'prior'"),
    ("saliency", {"inversion": {"saliency": "mean"}}, "inversion.saliency: expected 'instant' or 'accumulated'"),
    ("batch > shard", {"inversion": {"batch_size": 3}}, "inversion.batch_size: must be <= images_per_shard (2), got 3"),
    ("image format", {"image_format": "jpg"}, "image_format: expected 'png' or 'webp', got 'jpg'"),
    ("dtype", {"dtype": "float16"}, "dtype: expected 'float32' or 'bfloat16'"),
    ("workers", {"resources": {"workers": 0}}, "resources.workers: must be 'auto' or an integer > 0, got 0"),
    ("gpus", {"resources": {"gpus_per_worker": -1}}, "resources.gpus_per_worker: must be >= 0"),
    ("hub repo", {"hub": {"repo_id": "no-namespace"}}, "hub.repo_id: must look like 'namespace/name'"),
    ("bool field", {"inversion": {"augment": {"flip": "yes please"}}},
     "inversion.augment.flip: expected true or false"),
]


@pytest.mark.parametrize("patch,expected", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_manifest_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            patch: dict[str, Any], expected: str) -> None:
    path = write(tmp_path / "m", merged(BASE, patch))
    before = tree(tmp_path)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(cli_lines(err)) == 1, err
    assert f"{path}: {expected}" in err, err
    assert tree(tmp_path) == before


RAW_CASES = [
    ("invalid yaml", "teacher: toy\nimages_per_class: [4\n", "invalid YAML"),
    ("duplicate key", "teacher: toy\nimages_per_class: 4\nimages_per_class: 5\nimages_per_shard: 2\n",
     "invalid YAML: found duplicate key 'images_per_class' (line 3, column 1)"),
    ("empty", "", "manifest is empty"),
    ("list", "- teacher\n", "expected a mapping of fields at the top level, got list"),
    ("missing field", "teacher: toy\nimages_per_class: 4\n", "images_per_shard: required field is missing"),
    # a typo in a required field is reported as the typo, not as the field it left missing
    ("typo of a required field", "teacher: toy\nimgs_per_class: 4\nimages_per_shard: 2\n",
     ": unknown field 'imgs_per_class' (did you mean 'images_per_class'?)\n"),
    ("unknown before other errors", "teacher: toy\nimages_per_class: 0\nimages_per_shard: 2\nsede: 3\n",
     ": unknown field 'sede' (did you mean 'seed'?); images_per_class: must be > 0, got 0\n"),
    ("every problem on one line", "teacher: toy\nimgs_per_class: 4\nimages_per_shard: x\nseeed: 1\ndtype: f\n"
     "image_format: jpg\n", "(did you mean 'seed'?); images_per_shard: expected an integer, got string 'x' "
     "(and 2 more problems)\n"),
    ("absurd images_per_class", "teacher: toy\nimages_per_class: 1000000000000\nimages_per_shard: 2\n",
     "images_per_class: must be <= 10,000,000 (sample keys hold a 7-digit per-class index), got 1,000,000,000,000"),
    ("too many shards", "teacher: toy\nimages_per_class: 10000\nimages_per_shard: 2\n",
     "images_per_shard: 10 classes x 10,000 images in shards of 2 make 50,000 shards; a corpus has at most "
     "10,000 (files per folder): use images_per_shard >= 10"),
    ("too many shards per class", "teacher: toy\nimages_per_class: 1000000\nimages_per_shard: 2\n",
     "images_per_shard: 1,000,000 images per class in shards of 2 make 500,000 shards per class; a corpus has at "
     "most 10,000 (files per folder): use images_per_shard >= 100"),
    ("too many shards in a range", "teacher: toy\nclasses: {start: 0, stop: 4}\nimages_per_class: 10000\n"
     "images_per_shard: 2\n", "images_per_shard: 4 classes x 10,000 images in shards of 2 make 20,000 shards"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_bad_manifest_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(cli_lines(err)) == 1 and expected in err, err


def test_missing_manifest_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read manifest" in capsys.readouterr().err


def test_output_through_symlink_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "link").symlink_to(tmp_path / "elsewhere")
    path = write(tmp_path / "m", merged(BASE, {"output": "link/out"}))
    with pytest.raises(UserError, match=r"output: 'link/out' resolves through a symlink"):
        load_spec(path)


def test_output_paths(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path / "m", merged(BASE, {"output": "runs/../corpus"})))
    assert spec.output == (tmp_path / "m" / "corpus").resolve()
    spec = load_spec(write(tmp_path / "m", merged(BASE, {"output": "/mnt/data/corpus"})))
    assert spec.output == Path("/mnt/data/corpus")
    default = dict(BASE)
    del default["output"]
    spec = load_spec(write(tmp_path / "m", default, name="my-run.yaml"))
    assert spec.name == "my-run" and spec.output == (tmp_path / "m" / "my-run-out").resolve()
    moved = spec.with_output("elsewhere")
    assert moved.output == Path.cwd() / "elsewhere" and moved.spec_hash() == spec.spec_hash()


def test_defaults_and_conversion(tmp_path: Path) -> None:
    # `1e-4` (no dot) is a string in YAML 1.1; the manifest loader reads it as a float
    text = "teacher: toy\nimages_per_class: 100\nimages_per_shard: 80\ninversion: {loss: {tv_l2: 1e-4}}\n"
    spec = load_spec(write(tmp_path, text))
    cfg = spec.inversion_config()
    recommended = recommended_config("smi", 4000)
    assert cfg == dataclasses.replace(recommended, loss=dataclasses.replace(recommended.loss, tv_l2=1e-4))
    assert cfg.selection.schedule.iterations == (50, 100, 200, 300)
    assert spec.batch_size == 64 and spec.classes == tuple(range(10))
    assert spec.license == "other" and spec.dtype == "float32" and spec.device == "auto"
    assert spec.resources.workers == "auto" and spec.resources.gpus_per_worker is None
    dense = load_spec(write(tmp_path, merged(BASE, {"inversion": {"method": "dense"}})))
    assert dense.inversion_config().selection.kind == "dense"


def test_class_forms(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, merged(BASE, {"classes": [7, 2, 5]}))).classes == (2, 5, 7)
    spec = load_spec(write(tmp_path, merged(BASE, {"classes": {"start": 3, "stop": 6}})))
    assert spec.classes == (3, 4, 5) and spec.class_names == ("toy_3", "toy_4", "toy_5")


def test_resolved_is_json(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, merged(BASE, {"hub": {"repo_id": "me/corpus"}, "license": "cc-by-4.0"})))
    r = json.loads(json.dumps(spec.resolved()))
    assert r["teacher"]["id"] == "toy" and r["classes"] == list(range(10)) and len(r["class_names"]) == 10
    assert r["inversion"]["batch_size"] == 2 and r["inversion"]["schedule"]["iterations"] == [20, 40]
    assert r["hub"] == {"repo_id": "me/corpus", "private": False, "license": "cc-by-4.0"}
    assert r["spec_hash"] == spec.spec_hash() and r["num_shards"] == 20
    # manifest.json is published: no absolute paths of this machine in it
    assert "output" not in r and str(tmp_path) not in json.dumps(r)


def test_spec_hash_covers_only_corpus_fields(tmp_path: Path) -> None:
    h = load_spec(write(tmp_path, BASE)).spec_hash()
    for same in ({"output": "other"}, {"resources": {"workers": 3, "cpus_per_worker": 2}}, {"name": "x"},
                 {"hub": {"repo_id": "a/b"}}, {"device": "cpu"}, {"license": "mit"}):
        assert load_spec(write(tmp_path, merged(BASE, same))).spec_hash() == h, same
    for changed in ({"images_per_class": 6}, {"images_per_shard": 1}, {"seed": 1}, {"classes": [0, 1]},
                    {"dtype": "bfloat16"}, {"image_format": "webp"}, {"inversion": {"lr": 0.2}},
                    {"inversion": {"stopped_patches": "frozen"}}, {"inversion": {"augment": {"zoom": [0.5, 1.0]}}},
                    {"inversion": {"augment": {"colour_shift": 0.2}}}):
        assert load_spec(write(tmp_path, merged(BASE, changed))).spec_hash() != h, changed


def test_fields_added_later_keep_old_hashes_at_their_default(tmp_path: Path) -> None:
    """Corpora made before ``stopped_patches`` (or zoom, colour shift) existed still resume: a field added
    later is not hashed at the engine's own default."""
    paper = merged(BASE, {"inversion": PAPER_RECIPE})
    spec = load_spec(write(tmp_path, paper))
    later = {"augment": {"zoom": None, "colour_shift": 0.0, "per_sample": True}}
    assert spec.spec_hash() == load_spec(write(tmp_path, merged(paper, {"inversion": later}))).spec_hash()
    assert "zoom" not in spec.hashed_fields()["inversion"]["augment"]
    assert spec.resolved()["inversion"]["augment"]["zoom"] is None
    assert "stopped_patches" not in spec.hashed_fields()["inversion"]
    assert spec.resolved()["inversion"]["stopped_patches"] == "frozen"
    assert spec.inversion_config().selection.stopped == "frozen"
    accumulated = load_spec(write(tmp_path, merged(paper, {"inversion": {"saliency": "accumulated"}})))
    assert accumulated.inversion_config().selection.saliency == "accumulated"
    assert accumulated.hashed_fields()["inversion"]["saliency"] == "accumulated"
    assert "saliency" not in spec.hashed_fields()["inversion"]


def test_dense_hash_ignores_smi_only_fields(tmp_path: Path) -> None:
    """A dense inversion ignores the stop schedule and the stopped pixels, so its hash does too."""
    def h(method: str, patch: dict[str, Any]) -> str:
        return load_spec(write(tmp_path, merged(BASE, {"inversion": {"method": method, **patch}}))).spec_hash()

    smi_only = ({"schedule": {"iterations": [50], "ratios": [0.5]}}, {"stopped_patches": "frozen"},
                {"saliency": "accumulated"})
    for patch in smi_only:
        assert h("dense", patch) == h("dense", {}), patch
        assert h("smi", patch) != h("smi", {}), patch
    assert h("dense", {"lr": 0.2}) != h("dense", {})


# spec hashes of BASE (version 3) under engine 1; the timm pin uses the stand-in DeiT teacher, which resolves to
# the pretrained tag fb_in1k
V3_HASHES = {"smi": "9fff77c722ea94d7c2ec5c059981efac1a5d7a0a73f40104e8f0db5dd6e7bb98",
             "dense": "0a1ff9931f6baf4f210d4ceb087e1641485609d27fc219cb9ce6527f7bca9cbd",
             "timm": "ada7b81327920d9862031b6cba7322108c5da168b733b1bbeda9cb6a0b28c261"}


def _pinned_specs(tmp_path: Path) -> dict[str, Any]:
    paper = merged(BASE, {"inversion": PAPER_RECIPE})
    return {"smi": load_spec(write(tmp_path, merged(paper, {"inversion": {"method": "smi"}}))),
            "dense": load_spec(write(tmp_path, merged(paper, {"inversion": {"method": "dense"}}))),
            "timm": load_spec(write(tmp_path, merged(paper, {"teacher": "timm:deit_base_patch16_224"})))}


def test_hash_version_3_is_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_mod, "ENGINE_VERSION", 1)  # the pins' engine
    for kind, spec in _pinned_specs(tmp_path).items():
        assert spec.spec_hash() == V3_HASHES[kind], kind
        assert spec.hashed_fields()["engine_version"] == 1 and spec.hashed_fields()["hash_version"] == 3
        assert spec.matches_hash(V3_HASHES[kind])
        assert not spec.matches_hash(None) and not spec.matches_hash("0" * 64)


def test_engine_version_is_hashed_and_retires_older_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = _pinned_specs(tmp_path)
    monkeypatch.setattr(spec_mod, "ENGINE_VERSION", 2)  # engine 2: the pyramid's arithmetic changed (rounding)
    for kind, spec in specs.items():
        assert spec.spec_hash() != V3_HASHES[kind], kind
        assert not spec.matches_hash(V3_HASHES[kind])  # engine 1's corpora: no longer resumable under engine 2
        assert spec.matches_hash(spec.spec_hash())
        recorded = {**spec.hashed_fields(), "engine_version": 1}  # as manifest.json recorded it under engine 1
        assert spec.hash_differences(recorded) == ["engine_version: 1 -> 2"]


def test_timm_teacher_is_hashed_by_its_resolved_pretrained_tag(tmp_path: Path) -> None:
    bare = load_spec(write(tmp_path, merged(BASE, {"teacher": "timm:deit_base_patch16_224"})))
    tagged = load_spec(write(tmp_path, merged(BASE, {"teacher": "timm:deit_base_patch16_224.fb_in1k"})))
    other = load_spec(write(tmp_path, merged(BASE, {"teacher": "timm:deit_base_patch16_224.fb_in22k"})))
    # the bare name and the tag it resolves to make the same corpus; another tag does not
    assert bare.hashed_fields()["teacher"] == {"kind": "timm", "id": "timm:deit_base_patch16_224.fb_in1k"}
    assert bare.spec_hash() == tagged.spec_hash() != other.spec_hash()
    r = bare.resolved()["teacher"]
    assert r["resolved_id"] == "timm:deit_base_patch16_224.fb_in1k" and r["pretrained_tag"] == "fb_in1k"
    assert bare.hash_differences(other.hashed_fields()) == [
        "teacher.id: 'timm:deit_base_patch16_224.fb_in22k' -> 'timm:deit_base_patch16_224.fb_in1k'"]


def test_checkpoint_teacher_hash_follows_content(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "w.safetensors").write_bytes(b"weights-1")
    path = write(tmp_path, merged(BASE, {"teacher": "a/w.safetensors"}))
    spec = load_spec(path)
    assert spec.teacher_spec == str(tmp_path / "a" / "w.safetensors")
    h = spec.spec_hash()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "w.safetensors").rename(tmp_path / "b" / "w.safetensors")
    assert load_spec(write(tmp_path, merged(BASE, {"teacher": "b/w.safetensors"}))).spec_hash() == h
    (tmp_path / "b" / "w.safetensors").write_bytes(b"weights-2")
    assert load_spec(write(tmp_path, merged(BASE, {"teacher": "b/w.safetensors"}))).spec_hash() != h



def test_checkpoint_teacher_is_recorded_relative_to_the_manifest_and_not_hashed(tmp_path: Path) -> None:
    """manifest.json (published) records the checkpoint as the manifest named it, relative to the manifest's
    folder, never as an absolute path; where it is recorded does not change the spec hash."""
    m = tmp_path / "m"
    (m / "teachers").mkdir(parents=True)
    (m / "teachers" / "vit.safetensors").write_bytes(b"weights-1")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "vit.safetensors").write_bytes(b"weights-1")
    cases = {
        "teachers/vit.safetensors": "teachers/vit.safetensors",
        "./teachers/../teachers/vit.safetensors": "teachers/vit.safetensors",
        str(m / "teachers" / "vit.safetensors"): "teachers/vit.safetensors",  # absolute, inside the folder
        "../shared/vit.safetensors": "vit.safetensors",  # outside the manifest's folder: the name alone
        str(tmp_path / "shared" / "vit.safetensors"): "vit.safetensors",
    }
    hashes = set()
    for given, recorded in cases.items():
        spec = load_spec(write(m, merged(BASE, {"teacher": given})))
        teacher = json.loads(json.dumps(spec.resolved()))["teacher"]
        assert teacher["spec"] == recorded, given
        assert str(tmp_path) not in json.dumps(spec.resolved())
        hashes.add(spec.spec_hash())
    assert len(hashes) == 1

def test_shipped_manifests_load() -> None:
    demo = load_spec(MANIFESTS / "demo.yaml")
    assert demo.classes == tuple(range(10)) and demo.num_images == 80 and demo.device == "cpu"
    assert demo.output == MANIFESTS / "demo-out"
    big = load_spec(MANIFESTS / "imagenet1k-deit-base.yaml")
    cfg = big.inversion_config()
    assert big.num_images == 1_000_000 and big.dtype == "bfloat16" and big.license == "cc-by-nc-4.0"
    assert cfg.iterations == 4000 and cfg.selection.schedule.iterations == (50, 100, 200, 300)


def test_shipped_manifests_with_real_teacher(monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = pytest.importorskip("pipeline.teachers.loading")
    monkeypatch.setattr(spec_mod, "_describe_teacher", teacher.describe_teacher)
    demo = load_spec(MANIFESTS / "demo.yaml")
    assert demo.teacher.num_classes == 10 and demo.teacher.img_size == (32, 32)
    big = load_spec(MANIFESTS / "imagenet1k-deit-base.yaml")
    assert big.teacher.num_classes == 1000 and len(big.class_names) == 1000


def test_plan_json_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BASE)
    assert main(["plan", str(path), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert {"shards", "images", "flops", "bytes", "gpu_hours", "classes", "spec_hash"} <= set(summary)
    assert summary["shards"] == 20 and summary["images"] == 40 and summary["classes"] == 10
    assert "plan:" in out[0] and tree(tmp_path) == {"manifest.yaml"}


def test_spec_from_dict(tmp_path: Path) -> None:
    spec = spec_from_dict(dict(BASE), base_dir=tmp_path, label="inline")
    assert spec.name == "run" and spec.output == tmp_path.resolve() / "out" and spec.source is None
    with pytest.raises(UserError, match=r"^inline: images_per_class: must be > 0, got 0$"):
        spec_from_dict(merged(BASE, {"images_per_class": 0}), base_dir=tmp_path, label="inline")
