"""Teacher loading and description (pipeline.teachers.loading), offline, with local checkpoint files."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import pipeline.teachers.loading as teacher_mod
from pipeline.errors import UserError
from pipeline.teachers.checkpoint import save_checkpoint
from pipeline.teachers.loading import (
    Teacher,
    TeacherInfo,
    describe_teacher,
    load_teacher,
    parse_spec,
)
from pipeline.teachers.toy_data import CLASS_NAMES

ARCH = "vit_tiny_patch16_224"
KWARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """No network at all: the Hub client is in offline mode and any socket connection fails."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, pretrained=False, **KWARGS).eval()


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every torch.load call; fail the test if one is made without weights_only=True."""
    calls: list[dict[str, Any]] = []
    real = torch.load

    def checked(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", checked)
    return calls


def _x() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_safetensors_round_trip(tmp_path: Path, tiny_vit: torch.nn.Module, torch_loads: list) -> None:
    names = [f"thing_{i}" for i in range(5)]
    path = save_checkpoint(
        tiny_vit, tmp_path / "mine.safetensors", arch=ARCH, model_kwargs=KWARGS,
        class_names=names, license="cc-by-4.0", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
    )
    teacher = load_teacher(str(path))
    assert isinstance(teacher, Teacher) and isinstance(teacher.info, TeacherInfo)
    with torch.no_grad():
        assert torch.equal(teacher.model(_x()), tiny_vit(_x()))
    assert teacher.class_names == names and teacher.num_classes == 5 and teacher.license == "cc-by-4.0"
    assert teacher.mean == (0.1, 0.2, 0.3) and teacher.std == (0.4, 0.5, 0.6) and teacher.img_size == (32, 32)
    assert teacher.teacher_id.startswith("file:mine.safetensors@") and len(teacher.teacher_id.split("@")[1]) == 12
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    info = describe_teacher(str(path))
    assert info == teacher.info
    assert (info.embed_dim, info.depth, info.num_heads, info.mlp_ratio) == (32, 2, 2, 4.0)
    assert info.patch_size == (8, 8) and info.num_prefix_tokens == 1 and info.arch == ARCH
    assert torch_loads == []  # safetensors never goes through torch.load


def test_checkpoint_without_names_gets_placeholders(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    path = save_checkpoint(tiny_vit, tmp_path / "a.safetensors", arch=ARCH, model_kwargs=KWARGS,
                           class_names=None, license=None)
    info = describe_teacher(str(path))
    assert info.class_names == tuple(f"class_{i}" for i in range(5)) and info.license is None


def test_pth_with_sidecar_and_with_arch_suffix(tmp_path: Path, tiny_vit: torch.nn.Module, torch_loads: list) -> None:
    pth = tmp_path / "ft.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_vit.state_dict().items()}}, pth)
    sidecar = {
        "architecture": ARCH,
        "num_classes": 5,
        "model_args": {k: v for k, v in KWARGS.items() if k != "num_classes"},
        "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "license": "mit"},
        "label_names": list("abcde"),
    }
    (tmp_path / "ft.pth.json").write_text(json.dumps(sidecar))
    teacher = load_teacher(str(pth))
    with torch.no_grad():
        assert torch.equal(teacher.model(_x()), tiny_vit(_x()))
    assert teacher.class_names == list("abcde") and teacher.license == "mit" and teacher.mean == (0.5, 0.5, 0.5)
    assert torch_loads and all(c["weights_only"] is True for c in torch_loads)

    # no sidecar: the architecture comes from PATH::ARCH (timm defaults + the class count of the head)
    plain = tmp_path / "plain.pt"
    head_only = timm.create_model(ARCH, pretrained=False, num_classes=7).eval()
    torch.save(head_only.state_dict(), plain)
    assert parse_spec(f"{plain}::{ARCH}") == ("file", str(plain), ARCH)
    t2 = load_teacher(f"{plain}::{ARCH}")
    assert t2.num_classes == 7 and t2.img_size == (224, 224) and t2.class_names[0] == "class_0"
    with pytest.raises(UserError, match="::ARCH"):
        describe_teacher(str(plain))


def test_pickled_objects_are_refused(tmp_path: Path, torch_loads: list) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Path("x")}, path)  # a non-tensor object
    (tmp_path / "evil.json").write_text(json.dumps({"architecture": ARCH, "model_args": KWARGS}))
    with pytest.raises(UserError, match="weights_only"):
        load_teacher(str(path))
    assert torch_loads and all(c["weights_only"] is True for c in torch_loads)


def test_describe_timm_names_offline(offline: list) -> None:
    deit = describe_teacher("timm:deit_base_patch16_224")
    assert deit.teacher_id == "timm:deit_base_patch16_224" and deit.num_classes == 1000
    assert (deit.embed_dim, deit.depth, deit.num_heads, deit.mlp_ratio) == (768, 12, 12, 4.0)
    assert deit.img_size == (224, 224) and deit.patch_size == (16, 16) and deit.num_prefix_tokens == 1
    assert deit.mean == (0.485, 0.456, 0.406) and deit.license == "apache-2.0"
    assert len(deit.class_names) == 1000 and deit.class_names[0].startswith("tench")
    assert deit.label_ids is not None and deit.label_ids[0] == "n01440764"
    small = describe_teacher("timm:vit_small_patch16_224.augreg_in21k_ft_in1k")
    assert small.embed_dim == 384 and small.num_heads == 6 and small.mean == (0.5, 0.5, 0.5)
    assert len(small.class_names) == 1000
    assert offline == []


def test_describe_toy_does_not_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMI_SYNTH_CACHE", str(tmp_path))
    info = describe_teacher("toy")
    assert info.teacher_id == "toy:v1" and info.num_classes == 10 and info.class_names == CLASS_NAMES
    assert info.img_size == (32, 32) and info.patch_size == (4, 4) and info.mean == (0.5, 0.5, 0.5)
    assert info.license == "apache-2.0" and 100_000 < info.num_params < 1_000_000
    assert list(tmp_path.iterdir()) == []


def test_load_toy_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.teachers import toy as toy_teacher

    real = toy_teacher.load_or_build_toy_teacher
    tiny = toy_teacher.TrainConfig(steps=2, batch_size=4, keep_tokens=16, heldout_images=10)
    built: list[int] = []

    def tiny_build(**kwargs: Any) -> Any:
        built.append(1)
        return real(config=tiny, **kwargs)

    # a two-step recipe (the full one trains for minutes), patched where load_teacher looks the builder up:
    # its own module's name (bound when it was imported), and the toy module's for a lookup made there
    for module in (teacher_mod, toy_teacher):
        monkeypatch.setattr(module, "load_or_build_toy_teacher", tiny_build, raising=False)
    monkeypatch.setenv("SMI_SYNTH_CACHE", str(tmp_path))
    teacher = load_teacher("toy")
    assert built == [1]  # the tiny recipe, not the full one
    meta = json.loads((tmp_path / f"toy-teacher-{toy_teacher.TOY_TEACHER_VERSION}" / "meta.json").read_text())
    assert meta["config"]["train"]["steps"] == 2
    assert teacher.teacher_id == "toy:v1" and teacher.class_names == list(CLASS_NAMES)
    assert teacher.mean == teacher.std == (0.5, 0.5, 0.5)
    # the cached weights file is itself a teacher checkpoint
    cached = tmp_path / f"toy-teacher-{toy_teacher.TOY_TEACHER_VERSION}" / "model.safetensors"
    again = load_teacher(str(cached))
    with torch.no_grad():
        assert torch.equal(again.model(_x()), teacher.model(_x()))
    assert again.class_names == list(CLASS_NAMES) and again.license == "apache-2.0"


def test_timm_pretrained_offline_is_a_user_error() -> None:
    with pytest.raises(UserError, match="could not fetch pretrained weights.*local .safetensors"):
        load_teacher("timm:deit_tiny_patch16_224")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("timm:deit_bse_patch16_224", "did you mean 'deit_base_patch16_224'"),
        ("timm:vit_small_patch16_224.nonsense", "Invalid pretrained tag"),
        ("timm:", "needs a model name"),
        ("timm:resnet18", "not a timm Vision Transformer"),
        ("timm:vit_base_patch16_reg4_gap_256", "no class token"),
        ("/no/such/teacher.safetensors", "checkpoint file not found: /no/such/teacher.safetensors"),
        ("", "empty"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        describe_teacher(spec)
    with pytest.raises(UserError, match=message):
        load_teacher(spec)


def test_non_vit_checkpoint_is_refused(tmp_path: Path) -> None:
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=3)
    path = save_checkpoint(resnet, tmp_path / "cnn.safetensors", arch="resnet18", model_kwargs={"num_classes": 3},
                           class_names=None, license=None)
    for fn in (describe_teacher, load_teacher):
        with pytest.raises(UserError, match=r"cnn\.safetensors.*ResNet is not a timm Vision Transformer"):
            fn(str(path))


def test_mismatched_weights_and_bad_files(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    path = save_checkpoint(tiny_vit, tmp_path / "t.safetensors", arch=ARCH, model_kwargs=KWARGS,
                           class_names=None, license=None)
    wrong = tmp_path / "w.pth"
    torch.save(tiny_vit.state_dict(), wrong)
    (tmp_path / "w.json").write_text(json.dumps({"architecture": ARCH, "model_args": {**KWARGS, "depth": 3}}))
    with pytest.raises(UserError, match="do not fit the architecture"):
        load_teacher(str(wrong))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors"):
        describe_teacher(str(junk))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(UserError, match="unsupported checkpoint type"):
        describe_teacher(str(onnx))
    with pytest.raises(UserError, match="class names"):
        save_checkpoint(tiny_vit, tmp_path / "n.safetensors", arch=ARCH, model_kwargs=KWARGS,
                        class_names=["only one"], license=None)
    assert describe_teacher(str(path)).num_classes == 5


def test_teacher_module_never_calls_torch_load_unsafely() -> None:
    source = Path(teacher_mod.__file__).read_text()
    for line in (ln for ln in source.splitlines() if "torch.load(" in ln and not ln.lstrip().startswith(("#", "-"))):
        if "``" not in line:
            assert "weights_only=True" in line, line


def test_checkpoint_bytes_are_reproducible(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    kwargs = {"arch": ARCH, "model_kwargs": KWARGS, "class_names": list("abcde"), "license": "mit"}
    a = save_checkpoint(tiny_vit, tmp_path / "a.safetensors", **kwargs).read_bytes()
    b = save_checkpoint(tiny_vit, tmp_path / "b.safetensors", **kwargs).read_bytes()
    assert a == b


# --- identity: resolved pretrained tag, sha256 of the weights actually loaded -------------------------


def test_timm_names_resolve_to_their_pretrained_tag(offline: list) -> None:
    bare = describe_teacher("timm:vit_tiny_patch16_224")
    assert bare.teacher_id == "timm:vit_tiny_patch16_224"  # as written (sample JSON, hash versions 1-2)
    assert bare.pretrained_tag == "augreg_in21k_ft_in1k"  # what this timm calls the default
    assert bare.identity == bare.resolved_id == "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    tagged = describe_teacher("timm:vit_small_patch16_224.augreg_in1k")
    assert tagged.identity == "timm:vit_small_patch16_224.augreg_in1k" and tagged.pretrained_tag == "augreg_in1k"
    assert offline == []


def _hub_snapshot(cache: Path, repo: str, model: torch.nn.Module, commit: str) -> None:
    """A Hugging Face cache entry as a download leaves it: refs/main -> snapshots/COMMIT/model.safetensors."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "snapshots" / commit / "model.safetensors"))


def test_timm_pretrained_weights_are_hashed_as_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      offline: list) -> None:
    """timm's real pretrained path, offline, from a Hub cache: the digest is of the weights it loaded."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.manual_seed(3)
    weights = timm.create_model(ARCH, pretrained=False).eval()
    _hub_snapshot(tmp_path / "hub", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", weights, "a" * 40)
    teacher = load_teacher("timm:vit_tiny_patch16_224")
    assert teacher.weights_sha256 == teacher_mod.weights_sha256(weights)
    assert teacher.info.identity == "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    with torch.no_grad():  # another upload under the same name: another digest
        weights.head.bias[0] += 1e-3
    (tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "refs" / "main").unlink()
    _hub_snapshot(tmp_path / "hub", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", weights, "b" * 40)
    again = load_teacher("timm:vit_tiny_patch16_224")
    assert again.weights_sha256 == teacher_mod.weights_sha256(weights) != teacher.weights_sha256
    assert offline == []


def test_weights_digest_follows_the_tensors_not_the_file(tmp_path: Path, tiny_vit: torch.nn.Module) -> None:
    st = save_checkpoint(tiny_vit, tmp_path / "a.safetensors", arch=ARCH, model_kwargs=KWARGS,
                         class_names=None, license=None)
    pth = tmp_path / "b.pth"
    torch.save({"model": tiny_vit.state_dict()}, pth)
    (tmp_path / "b.json").write_text(json.dumps({"architecture": ARCH, "model_args": KWARGS}))
    a, b = load_teacher(str(st)), load_teacher(str(pth))
    assert a.weights_sha256 == b.weights_sha256 == teacher_mod.weights_sha256(tiny_vit)
    assert len(a.weights_sha256) == 64 and a.teacher_id != b.teacher_id
    changed = timm.create_model(ARCH, pretrained=False, **KWARGS)
    changed.load_state_dict(tiny_vit.state_dict())
    assert teacher_mod.weights_sha256(changed) == a.weights_sha256
    with torch.no_grad():
        changed.blocks[1].mlp.fc2.weight[0, 0] = torch.nextafter(changed.blocks[1].mlp.fc2.weight[0, 0],
                                                                 torch.tensor(1.0))  # one ulp
    assert teacher_mod.weights_sha256(changed) != a.weights_sha256
    assert teacher_mod.weights_sha256(tiny_vit.to(torch.bfloat16)) != a.weights_sha256  # dtype counts


def _with_metadata(path: Path, model: torch.nn.Module, config: dict[str, Any]) -> Path:
    """A safetensors file whose metadata says ``config`` (bypassing save_checkpoint's own check)."""
    from safetensors.torch import save_file

    from pipeline.teachers.checkpoint import META_KEY

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={META_KEY: json.dumps(config)})
    return path


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"checkpoint_path": "/tmp/evil.pth"}, "checkpoint_path"),
        ({"pretrained_cfg_overlay": {"file": "/tmp/evil.pth"}}, "pretrained_cfg_overlay"),
        ({"pretrained_cfg": {"file": "/tmp/evil.pth"}}, "pretrained_cfg"),
        ({"pretrained": True}, "pretrained"),
        ({"embed_layer": "os.system"}, "embed_layer"),
        ({"cache_dir": "/tmp"}, "cache_dir"),
        ({"depth": "2"}, "depth"),
        ({"img_size": "/etc/passwd"}, "img_size"),
        ({"global_pool": "../x"}, "global_pool"),
    ],
)
def test_model_args_outside_the_allow_list_are_refused_naming_the_key(
    tmp_path: Path, tiny_vit: torch.nn.Module, torch_loads: list, extra: dict[str, Any], key: str
) -> None:
    config = {"architecture": ARCH, "num_classes": 5, "model_args": {**KWARGS, **extra}}
    meta = _with_metadata(tmp_path / "m.safetensors", tiny_vit, config)
    pth = tmp_path / "s.pth"
    torch.save(tiny_vit.state_dict(), pth)
    (tmp_path / "config.json").write_text(json.dumps(config))  # a Hub-style sidecar beside s.pth
    for spec in (str(meta), str(pth)):
        for fn in (describe_teacher, load_teacher):
            with pytest.raises(UserError, match=rf"model_args.*'{key}'"):
                fn(spec)
    assert not torch_loads  # refused before any weights were read
    with pytest.raises(UserError, match=rf"'{key}'"):
        save_checkpoint(tiny_vit, tmp_path / "w.safetensors", arch=ARCH, model_kwargs={**KWARGS, **extra},
                        class_names=None, license=None)


def test_allowed_model_args_still_build_and_hub_cfg_downloads_are_dropped(
    tmp_path: Path, tiny_vit: torch.nn.Module
) -> None:
    config = {"architecture": ARCH, "num_classes": 5,
              "model_args": {**KWARGS, "img_size": [32, 32], "qkv_bias": True, "mlp_ratio": 4, "fc_norm": None,
                             "global_pool": "token", "drop_path_rate": 0.1},
              "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "hf_hub_id": "x/y",
                                 "file": "/tmp/evil.pth", "url": "https://example.invalid/w.pth"}}
    teacher = load_teacher(str(_with_metadata(tmp_path / "ok.safetensors", tiny_vit, config)))
    with torch.no_grad():
        assert torch.equal(teacher.model(_x()), tiny_vit(_x()))
    cfg = teacher.model.pretrained_cfg
    assert teacher.mean == (0.5, 0.5, 0.5) and cfg.get("file") is None and cfg.get("url") != config["pretrained_cfg"]["url"]
