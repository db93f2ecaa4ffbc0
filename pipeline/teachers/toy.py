"""The built-in toy teacher: a tiny timm VisionTransformer trained by our own code on :mod:`pipeline.teachers.toy_data`.

Training is deterministic (fixed seeds, deterministic algorithms, a fixed thread count) and fast:
images are generated on the fly, and for most steps each image is shown to the ViT as a subset of its
patch tokens chosen by object coverage plus noise (the way sparse inversion later runs it), which both
halves the cost of a step and focuses learning on the object. The last steps use all tokens.

The result is cached under ``$SMI_SYNTH_CACHE`` (default ``~/.cache/smi-synth``) in
``toy-teacher-<version>/``: ``model.safetensors`` (a teacher checkpoint :func:`pipeline.teachers.loading.load_teacher`
also reads) and ``meta.json`` (config, held-out top-1, sha256 of the weights). The folder is built under a
temporary name and renamed into place while holding a file lock, so concurrent builders do the work once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.teachers.adversarial import l2_step
from pipeline.teachers.cache import build_once, cache_root, read_teacher_folder, write_teacher_folder
from pipeline.teachers.classify import accuracy, batches, normalize
from pipeline.teachers.trainer import (
    Progress, deterministic, init_pos_embed, param_groups, warmup_cosine, warmup_steps,
)
from pipeline.teachers.toy_data import (
    CLASS_NAMES,
    make_toy_images,
    make_toy_images_and_masks,
)

log = logging.getLogger(__name__)

TOY_TEACHER_VERSION = "v1"
TOY_TEACHER_ID = f"toy:{TOY_TEACHER_VERSION}"
ARCH = "vit_tiny_patch16_224"  # the timm architecture whose arguments toy_model_config() overrides
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
LICENSE = "apache-2.0"

@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The toy teacher's training recipe (a cache built with another recipe is rebuilt)."""

    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    keep_tokens: int = 32  # patch tokens per image during the sparse phase
    dense_fraction: float = 0.3  # the last fraction of steps sees every token
    pos_embed_scale: float = 0.1  # initial 2-D sin-cos position embedding, scaled
    # > 0: robust training, one L2 gradient-ascent step of this norm (pixels in [0, 1]) per batch before
    # the update. A robust teacher's input gradients look like its classes, so inverting it yields
    # images a student can learn from; the default teacher's inversions are fooling images.
    adversarial_l2_eps: float = 0.0
    heldout_images: int = 2000
    heldout_seed: int = 0
    # The ViT's patch side: 4 gives the default 8 x 8 grid of 64 patches; 2 gives 16 x 16 = 256 patches,
    # nearer the 196 of a /16 ViT at 224, so sparse inversion has background to skip (scale keep_tokens
    # with it). Recorded with the model config, not the training recipe.
    patch_size: int = 4
    # One thread: bit-identical on every machine regardless of its core count, and robust on a busy
    # one (two OpenMP threads on two shared cores ran 3-10x slower than one under load).
    threads: int = 1

    def __post_init__(self) -> None:
        side = toy_model_config()["img_size"]
        if self.patch_size < 1 or side % self.patch_size:
            raise ValueError(f"patch_size: must divide the toy image side {side}, got {self.patch_size}")
        if not 1 <= self.keep_tokens <= (side // self.patch_size) ** 2:
            raise ValueError(
                f"keep_tokens: must lie in [1, {(side // self.patch_size) ** 2}] at patch size {self.patch_size}, "
                f"got {self.keep_tokens}"
            )


def toy_model_config(patch_size: int = 4) -> dict[str, Any]:
    """Keyword arguments of ``timm.create_model(ARCH, **kwargs)`` for the toy ViT (by default 64 patches of
    4x4; ``patch_size`` 2 gives 256 patches of 2x2)."""
    return {
        "img_size": 32,
        "patch_size": patch_size,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "mlp_ratio": 2.0,
        "num_classes": len(CLASS_NAMES),
    }


def toy_pretrained_cfg() -> dict[str, Any]:
    """The ``pretrained_cfg`` the toy model carries (normalisation, input size, labels, licence)."""
    cfg = toy_model_config()
    return {
        "architecture": ARCH,
        "input_size": (3, cfg["img_size"], cfg["img_size"]),
        "fixed_input_size": True,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "mean": MEAN,
        "std": STD,
        "num_classes": cfg["num_classes"],
        "label_names": list(CLASS_NAMES),
        "license": LICENSE,
    }


def create_toy_model(**overrides: Any) -> nn.Module:
    """A randomly initialised toy ViT (``overrides`` replace :func:`toy_model_config` entries)."""
    import timm

    model = timm.create_model(ARCH, pretrained=False, **{**toy_model_config(), **overrides})
    model.pretrained_cfg = toy_pretrained_cfg()
    return model


def describe_toy_teacher() -> tuple[nn.Module, dict[str, Any]]:
    """The toy architecture on the ``meta`` device (no weights, no training) and its metadata."""
    with torch.device("meta"):
        model = create_toy_model()
    return model, {"teacher_id": TOY_TEACHER_ID, "arch": ARCH, "class_names": list(CLASS_NAMES)}


# --- training ------------------------------------------------------------------------------------


def _sparse_logits(model: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Logits of the ViT on the prefix tokens plus the patch tokens ``keep`` ``(B, K)`` (timm's own modules)."""
    tokens = model._pos_embed(model.patch_embed(x))
    p = model.num_prefix_tokens
    patches = tokens[:, p:].gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    tokens = torch.cat([tokens[:, :p], patches], dim=1)
    return model.forward_head(model.norm(model.blocks(model.norm_pre(tokens))))


def _keep_indices(masks: torch.Tensor, patch: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` patch indices per image: highest object coverage plus uniform noise (background fills in)."""
    cover = F.avg_pool2d(masks.unsqueeze(1), patch).flatten(1)
    score = cover + 0.5 * torch.rand(cover.shape, generator=g)
    return score.topk(k, dim=1).indices.sort(dim=1).values


def l2_adversarial(
    logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, eps: float
) -> torch.Tensor:
    """``images`` (in [0, 1]) moved by one L2 step of norm ``eps`` up the cross-entropy gradient, clipped
    to [0, 1]; ``logits_fn`` maps images in [0, 1] to logits. The result carries no graph."""
    delta = torch.zeros_like(images, requires_grad=True)
    loss = F.cross_entropy(logits_fn(images + delta), labels)
    (grad,) = torch.autograd.grad(loss, [delta])
    return l2_step(images, grad, eps)


def evaluate(model: nn.Module, n: int = 2000, seed: int = 0, batch_size: int = 500) -> float:
    """Top-1 accuracy on ``n`` held-out generated images."""
    images, labels = make_toy_images(n, seed, split="heldout")
    return accuracy(model, batches(images, labels, batch_size), mean=MEAN, std=STD)


def build_toy_teacher(
    *, seed: int = 0, progress: Progress | None = None, config: TrainConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the toy teacher from scratch; returns the frozen model and a dict of
    ``heldout_top1``, ``train_seconds``, ``config`` (model and training) and ``params``."""
    cfg = config or TrainConfig()
    start = time.perf_counter()
    with deterministic(cfg.threads):
        torch.manual_seed(seed)
        model = create_toy_model(patch_size=cfg.patch_size)
        init_pos_embed(model, cfg.pos_embed_scale)
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.steps, warmup_steps(cfg.steps, cfg.warmup_fraction)))
        g = torch.Generator().manual_seed(seed)
        patch = cfg.patch_size
        sparse_steps = round(cfg.steps * (1 - cfg.dense_fraction))
        model.train()
        for step in range(cfg.steps):
            images, labels, masks = make_toy_images_and_masks(
                cfg.batch_size, seed * 10_000_000 + step, split="train"
            )
            keep = None
            if step < sparse_steps and cfg.keep_tokens < model.patch_embed.num_patches:
                keep = _keep_indices(masks, patch, cfg.keep_tokens, g)

            def logits_fn(pixels: torch.Tensor) -> torch.Tensor:
                x = normalize(pixels, MEAN, STD)
                return model(x) if keep is None else _sparse_logits(model, x, keep)

            if cfg.adversarial_l2_eps > 0:
                images = l2_adversarial(logits_fn, images, labels, cfg.adversarial_l2_eps)
            loss = F.cross_entropy(logits_fn(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if progress is not None:
                progress(step + 1, cfg.steps, loss.item())
            if (step + 1) % max(1, cfg.steps // 10) == 0:
                log.info("toy teacher: step %d/%d loss %.4f", step + 1, cfg.steps, loss.item())
        model.eval().requires_grad_(False)
        train_seconds = time.perf_counter() - start
        top1 = evaluate(model, cfg.heldout_images, cfg.heldout_seed)
    log.info("toy teacher: held-out top-1 %.4f after %.1f s", top1, train_seconds)
    meta = {
        "version": TOY_TEACHER_VERSION,
        "teacher_id": TOY_TEACHER_ID,
        "arch": ARCH,
        "seed": seed,
        "heldout_top1": top1,
        "train_seconds": round(train_seconds, 3),
        "params": sum(p.numel() for p in model.parameters()),
        "class_names": list(CLASS_NAMES),
        "config": _config_record(cfg),
        "torch_version": torch.__version__,
    }
    return model, meta


# --- cache ---------------------------------------------------------------------------------------


def _config_record(cfg: TrainConfig) -> dict[str, Any]:
    """The model and training config as stored in meta.json (JSON types); the patch size is the model's."""
    train = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "patch_size"}
    return json.loads(json.dumps({"model": toy_model_config(cfg.patch_size), "train": train}))


def _load_cached(folder: Path, cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached teacher, or None when absent, built by another version or recipe, or damaged."""
    return read_teacher_folder(
        folder, expect={"version": TOY_TEACHER_VERSION, "config": _config_record(cfg)},
        create_model=lambda: create_toy_model(patch_size=cfg.patch_size),
    )


def cache_folder(root: Path) -> Path:
    """The folder under a cache root that holds this version's teacher (``model.safetensors`` + meta)."""
    return Path(root) / f"toy-teacher-{TOY_TEACHER_VERSION}"


def load_or_build_toy_teacher(
    cache_dir: Path | None = None, *, progress: Progress | None = None, config: TrainConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The cached toy teacher, built (once, under a file lock) when missing; frozen, on the CPU.

    ``cache_dir`` is the root holding ``toy-teacher-<version>/`` (default :func:`cache_root`);
    ``config`` (tests only) replaces the default recipe.
    """
    cfg = config or TrainConfig()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = cache_folder(root)

    def build() -> tuple[nn.Module, dict[str, Any]]:
        log.info("building the toy teacher (first use; cached in %s)", folder)
        model, meta = build_toy_teacher(progress=progress, config=cfg)
        meta = write_teacher_folder(folder, model, meta, arch=ARCH, class_names=CLASS_NAMES, license=LICENSE,
                                    mean=MEAN, std=STD)
        return model, meta

    return build_once(root, f"toy-teacher-{TOY_TEACHER_VERSION}", lambda: _load_cached(folder, cfg), build)
