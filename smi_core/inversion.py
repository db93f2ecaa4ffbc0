"""Sparse model inversion: optimise pixels so a frozen ViT predicts the targets, stopping patches on a schedule.

``invert`` is the engine. It optimises the image in the teacher's normalised space with Adam, draws
every random choice (initial noise, roll/flip, optional zoom and colour shift, random stopping) from
the generator passed in, runs
the teacher on the kept patches only, freezes stopped patches exactly (no gradient, values pinned;
or, with ``selection.stopped == "prior"``, leaves them to the image priors alone),
clips to the normalisation's valid range after each step, and keeps a real copy of each sample's
best iterate of the final phase (once the kept set stops changing: losses over different token
sets are not comparable, and the published image should carry the final stop mask).

Each iteration's teacher forward and per-sample objective is one function, ``forward_objective``,
which ``InversionConfig.compile`` runs compiled (:mod:`smi_core.compiled`); ``invert_packed`` runs
several batches through one loop, each with its own random stream (:mod:`smi_core.packing`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from smi_core import losses
from smi_core.augment import (
    Warp,
    apply_roll_flip,
    apply_warp,
    token_overlap,
    token_source_patch,
)
from smi_core.compiled import compiled_step
from smi_core.config import InversionConfig, LossWeights
from smi_core.flops import schedule_flops
from smi_core.packing import BatchStreams
from smi_core.pyramid import ImagePyramid
from smi_core.result import InversionResult, expand_patch_mask
from smi_core.selection import images_per_target
from smi_core.vit import ViTGeometry, embed_tokens, forward_blocks, vit_geometry

log = logging.getLogger(__name__)

FUSED_ADAM_DEVICES = ("cpu", "cuda")



@dataclass(frozen=True)
class IterationState:
    """What an observer sees after each iteration. Tensors are live: clone what you keep."""

    iteration: int
    kept: torch.Tensor  # (B, K) canonical patch indices the forward of this iteration saw (with a zoom: the
    # kept set, while the forward saw the K view tokens that cover it best)
    pixels: torch.Tensor  # (B, 3, H, W) normalised image after this iteration's step
    grad: torch.Tensor  # (B, 3, H, W) gradient this iteration's step used
    loss: torch.Tensor  # (B,) per-sample objective of the iterate before the step


Observer = Callable[[IterationState], None]


def normalization(model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple:
    """``(mean, std)`` given explicitly or from the model's timm ``pretrained_cfg``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(mean) if mean is not None else cfg.get("mean")
    std = tuple(std) if std is not None else cfg.get("std")
    if mean is None or std is None:
        raise ValueError("mean/std: not given and the model's pretrained_cfg has none")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean/std: expected three values each and positive std, got {mean}, {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def patch_mask_to_pixels(mask: torch.Tensor, geometry: ViTGeometry) -> torch.Tensor:
    """``(B, N)`` patch mask -> ``(B, 1, H, W)`` pixel mask."""
    return expand_patch_mask(mask, geometry.grid, geometry.patch_size)


def _kept_to_mask(kept: torch.Tensor, num_patches: int) -> torch.Tensor:
    mask = torch.zeros(kept.shape[0], num_patches, dtype=torch.bool, device=kept.device)
    return mask.scatter_(1, kept, True)


def _zoomed_forward(
    model: nn.Module,
    pixels: torch.Tensor,
    kept: torch.Tensor,
    keep_pixels: torch.Tensor | None,
    aug,
    warp: Warp,
    patch_of_pixel: torch.Tensor,
    geometry: ViTGeometry,
    want_saliency: bool,
    autocast,
) -> tuple:
    """The teacher's forward on a zoomed (resampled) view, with SMI's token subset.

    A view token no longer is one canonical patch, so the K view tokens (K = kept patches, so shapes and
    FLOPs follow the schedule) with the largest share of kept pixels are forwarded (ties: lowest index),
    and stopped pixels enter the view detached: they get no teacher gradient, whatever the chosen tokens
    cover. The saliency handed to the policy is aligned with ``kept``: each kept patch gets the largest
    saliency of the forwarded tokens whose centre lies on it (0 if none does).

    Returns ``(view, subset, saliency, canonical, features, logits)`` like the exact path.
    """
    batch, num_patches = kept.shape[0], geometry.num_patches
    source = pixels if keep_pixels is None else torch.where(keep_pixels, pixels, pixels.detach())
    view = apply_warp(apply_roll_flip(source, aug, geometry.patch_size), warp)
    if kept.shape[1] == num_patches:
        subset = None
        view_index = torch.arange(num_patches, device=kept.device).expand(batch, -1)
    else:
        keep_view = apply_roll_flip(patch_mask_to_pixels(_kept_to_mask(kept, num_patches), geometry), aug,
                                    geometry.patch_size)
        overlap = token_overlap(keep_view, warp, geometry.patch_size)
        order = torch.sort(overlap, dim=1, descending=True, stable=True).indices[:, : kept.shape[1]]
        subset = view_index = torch.sort(order, dim=1).values
    with autocast:
        tokens = embed_tokens(model, view, subset)
        features, saliency = forward_blocks(model, tokens, saliency=want_saliency)
        logits = model.forward_head(features)
    if saliency is not None:
        source_patch = apply_roll_flip(patch_of_pixel, aug, geometry.patch_size)[:, 0].round().long()
        token_patch = torch.gather(token_source_patch(source_patch, warp, geometry.patch_size, batch), 1, view_index)
        per_patch = saliency.new_zeros(batch, num_patches, dtype=torch.float32)
        per_patch.scatter_reduce_(1, token_patch, saliency.float(), reduce="amax", include_self=True)
        saliency = torch.gather(per_patch, 1, kept)
    return view, subset, saliency, kept, features, logits


def _check_rebirth_stages(kept_counts: Sequence[int], num_patches: int) -> None:
    """Raise unless every rebirth stop lets at least one patch leave (else two of its images would be one)."""
    counts = [num_patches, *kept_counts]
    for before, after in zip(counts, counts[1:]):
        if after >= before:
            raise ValueError(f"selection.schedule.ratios: with rebirth every stop must let a patch leave; of "
                             f"{before} patches a stop keeps {after} ({num_patches} patches, kept {kept_counts})")


def _harvested(
    harvests: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    final: torch.Tensor,
    final_mask: torch.Tensor,
    final_loss: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rebirth's images, target by target: the whole image as each stop left it, in stop order, then the final one.

    Returns ``(images (B * S, 3, H, W) normalised, masks (B * S, N), losses (B * S,))`` for S images per target.
    """
    parts = [*harvests, (final, final_mask, final_loss)]
    images = torch.stack([image for image, _, _ in parts], 1)
    masks = torch.stack([mask for _, mask, _ in parts], 1)
    losses = torch.stack([loss for _, _, loss in parts], 1)
    return images.flatten(0, 1), masks.flatten(0, 1), losses.flatten(0, 1)


def per_sample_objective(
    weights: LossWeights,
    logits: torch.Tensor,
    targets: torch.Tensor,
    pixels: torch.Tensor,
    features: torch.Tensor,
    num_prefix_tokens: int,
) -> torch.Tensor:
    """The objective's per-sample terms ``(B,)``: weighted CE, TV, l2 and patch-similarity entropy.

    Batch-level terms (the BN prior) are added to the batch mean in the loop.
    """
    per_sample = weights.ce * losses.cross_entropy(logits, targets)
    if weights.tv_l1:
        per_sample = per_sample + weights.tv_l1 * losses.total_variation(pixels, 1)
    if weights.tv_l2:
        per_sample = per_sample + weights.tv_l2 * losses.total_variation(pixels, 2)
    if weights.l2:
        per_sample = per_sample + weights.l2 * losses.pixel_l2(pixels)
    if weights.patch_entropy:
        per_sample = per_sample - weights.patch_entropy * losses.patch_similarity_entropy(features, num_prefix_tokens)
    return per_sample


def forward_objective(
    model: nn.Module,
    view: torch.Tensor,
    subset: torch.Tensor | None,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    weights: LossWeights,
    num_prefix_tokens: int,
    want_saliency: bool,
    autocast_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One iteration's teacher forward on the view's tokens at ``subset`` and its per-sample objective.

    Returns ``(per_sample, saliency)``. This is the unit ``InversionConfig.compile`` compiles: its shapes
    change only at the schedule's stops. The roll/flip that made ``view`` stays outside (its draw would
    be a graph guard).
    """
    with torch.autocast(view.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        tokens = embed_tokens(model, view, subset)
        features, saliency = forward_blocks(model, tokens, saliency=want_saliency)
        logits = model.forward_head(features)
    return per_sample_objective(weights, logits, targets, pixels, features, num_prefix_tokens), saliency


def invert(
    model: nn.Module,
    targets: torch.Tensor,
    config: InversionConfig,
    generator: torch.Generator | BatchStreams,
    *,
    img_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    autocast_dtype: torch.dtype | None = None,
    bn_prior: losses.BNStatisticsPrior | None = None,
    count_flops: bool = True,
    observer: Observer | None = None,
) -> InversionResult:
    """Invert ``model`` for the target classes ``targets`` ``(B,)`` (on the model's device).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the teacher under autocast; pixels stay float32.
    ``bn_prior`` is needed when ``config.loss.bn_prior > 0``; its CNN gets the augmented view in this
    teacher's normalisation. ``observer`` is called after every iteration (progress, tracing, tests).
    ``generator`` is one batch's generator, or the :class:`~smi_core.packing.BatchStreams` of batches
    packed into ``targets`` (see :func:`invert_packed`). With ``selection.kind == "rebirth"`` the result has
    :func:`~smi_core.selection.images_per_target` images per target, target by target.
    """
    streams = generator if isinstance(generator, BatchStreams) else BatchStreams([targets.shape[0]], [generator])
    geometry = vit_geometry(model, img_size)
    device = targets.device
    weights = config.loss
    if weights.bn_prior > 0 and bn_prior is None:
        raise ValueError("loss.bn_prior: weight > 0 needs a bn_prior CNN")
    if config.selection.kind in ("smi", "rebirth") and not geometry.has_cls_token:
        raise ValueError(f"selection.kind: {config.selection.kind} needs a class token for its saliency; this model "
                         "has none")
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if targets.ndim != 1 or targets.dtype != torch.int64 or targets.numel() == 0:
        raise ValueError("targets: expected a non-empty 1-D int64 tensor of class indices")
    if num_classes and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(f"targets: class indices must lie in [0, {num_classes}), got {targets.tolist()}")
    if sum(streams.sizes) != targets.shape[0]:
        raise ValueError(f"targets: {targets.shape[0]} targets for packed batches of {list(streams.sizes)}")
    streams.check(config.augment)

    mean_t, std_t = normalization(model, mean, std)
    mean_v = torch.tensor(mean_t, device=device).view(1, 3, 1, 1)
    std_v = torch.tensor(std_t, device=device).view(1, 3, 1, 1)
    low, high = (0 - mean_v) / std_v, (1 - mean_v) / std_v
    batch, num_patches, prefix = targets.shape[0], geometry.num_patches, geometry.num_prefix_tokens
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    step = forward_objective if config.compile == "off" else compiled_step(forward_objective, config.compile)

    start = time.perf_counter()
    noise = streams.noise((3, *geometry.img_size))
    pixels = torch.maximum(torch.minimum(noise.to(device), high), low).requires_grad_(True)
    pyramid = ImagePyramid(geometry.img_size, config.pyramid, device) if config.pyramid else None
    coarse = pyramid.zeros(batch, 3) if pyramid is not None else []
    # the fused kernel: one pass per tensor instead of a dozen element-wise ops (CPU and CUDA have it)
    optimizer = torch.optim.Adam([pixels, *coarse], lr=config.lr, betas=config.betas,
                                 fused=device.type in FUSED_ADAM_DEVICES)
    # the image the teacher and the priors see (no graph): the pixel level plus the upsampled coarse levels
    current = pyramid.compose(pixels, coarse) if pyramid is not None else pixels.detach()

    policy = streams.policy(config.selection, num_patches)
    # rebirth: (image, the patches evolving until then, loss) as every stop left them, in stop order
    harvests: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    if config.selection.kind == "rebirth":
        _check_rebirth_stages(config.selection.schedule.kept_counts(num_patches), num_patches)
        harvests = []
    final_phase = policy.final_phase_start()
    kept = torch.arange(num_patches, device=device).expand(batch, -1).contiguous()
    keep_pixels: torch.Tensor | None = None  # (B, 1, H, W) bool once a patch has stopped
    pin_stopped = config.selection.stopped == "frozen"
    frozen: torch.Tensor | None = None  # values of stopped pixels, kept only when they are pinned
    best = current.clone()
    best_loss = torch.full((batch,), float("inf"), device=device)
    best_mask = torch.ones(batch, num_patches, dtype=torch.bool, device=device)

    # canonical patch index of every pixel (for the zoomed view's token -> patch map)
    patch_of_pixel = torch.arange(num_patches, device=device, dtype=torch.float32).view(1, num_patches)
    patch_of_pixel = patch_mask_to_pixels(patch_of_pixel, geometry)  # (1, 1, H, W)
    instant_saliency = config.selection.saliency == "instant"

    for iteration in range(config.iterations):
        augs = streams.roll_flips(config.augment, geometry.grid)
        warp = streams.warp(config.augment, device)
        want_saliency = policy.needs_saliency(iteration)
        if warp is not None and want_saliency and instant_saliency:
            warp = warp.without_zoom()  # a stop ranks every kept patch: this forward sees them all, uncropped
        seen_kept = kept
        image = current.requires_grad_(True)
        if warp is None or warp.theta is None:
            view = streams.apply_roll_flip(image, augs, geometry.patch_size)
            if warp is not None:
                view = apply_warp(view, warp)
            view_index, order = torch.sort(streams.remap_patch_index(kept, augs, geometry.grid), dim=1)
            canonical = torch.gather(kept, 1, order)  # canonical patch of each gathered token
            subset = None if kept.shape[1] == num_patches else view_index
            per_sample, saliency = step(model, view, subset, image, targets, weights, prefix, want_saliency,
                                        autocast_dtype)
        else:
            view, subset, saliency, canonical, features, logits = _zoomed_forward(
                model, image, kept, keep_pixels, augs[0], warp, patch_of_pixel, geometry, want_saliency, autocast
            )
            per_sample = per_sample_objective(weights, logits, targets, image, features, prefix)
        objective = streams.mean(per_sample)
        if weights.bn_prior:
            objective = objective + weights.bn_prior * streams.batch_term(bn_prior.loss, view)  # type: ignore[union-attr]

        with torch.no_grad():
            sample_loss = per_sample.detach().float()
            # the best iterate is sought in the final phase only: losses over other token sets differ
            if iteration >= final_phase:
                improved = sample_loss < best_loss
                best_loss = torch.where(improved, sample_loss, best_loss)
                best = torch.where(improved.view(-1, 1, 1, 1), image.detach(), best)
                if keep_pixels is not None:
                    best_mask = torch.where(improved.view(-1, 1), _kept_to_mask(kept, num_patches), best_mask)

        (grad,) = torch.autograd.grad(objective, [image])
        if frozen is not None:  # image priors would otherwise reach stopped pixels
            grad = grad * keep_pixels
        pixels.grad = grad
        if pyramid is not None:  # the image is linear in every level: its gradient through the adjoint
            for level, level_grad in zip(coarse, pyramid.adjoint(grad)):
                level.grad = level_grad
        optimizer.step()
        with torch.no_grad():
            if pyramid is not None:  # clip the composed image by moving the pixel level
                composed = pyramid.compose(pixels, coarse)
                current = torch.maximum(torch.minimum(composed, high), low)
                pixels.add_(current - composed)
            else:
                pixels.copy_(torch.maximum(torch.minimum(pixels, high), low))
                if frozen is not None:  # Adam momentum would move them too
                    pixels.copy_(torch.where(keep_pixels, pixels, frozen))
                current = pixels.detach()
            new_kept = streams.update(iteration, canonical if want_saliency else kept, saliency)
            if new_kept.shape[1] != kept.shape[1]:
                if harvests is not None:  # rebirth: the image as this stop leaves it is an image of its own
                    harvests.append((current.clone(), _kept_to_mask(kept, num_patches), sample_loss.clone()))
                kept = new_kept
                weights = config.loss.evolving(kept.shape[1] / num_patches)
                if kept.shape[1] == num_patches:  # every patch rejoined: nothing is stopped any more
                    keep_pixels = frozen = None
                else:
                    keep_pixels = patch_mask_to_pixels(_kept_to_mask(kept, num_patches), geometry)
                    frozen = pixels.detach().clone() if pin_stopped else None
                log.debug("iteration %d: %d patches keep evolving", iteration, kept.shape[1])
        if observer is not None:
            observer(IterationState(iteration, seen_kept, current, grad, sample_loss))

    final = best if config.keep_best else current
    final_mask = best_mask if config.keep_best else _kept_to_mask(kept, num_patches)
    final_loss = best_loss if config.keep_best else sample_loss
    if harvests is not None:
        final, final_mask, final_loss = _harvested(harvests, final, final_mask, final_loss)
        targets = targets.repeat_interleave(len(harvests) + 1)
    with torch.no_grad():  # the stored soft labels: one float32 forward of the final images, not autocast
        logits = model.forward_head(forward_blocks(model, embed_tokens(model, final))[0]).float()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    flops = (
        schedule_flops(model, geometry, config.selection, config.iterations, batch, device=device)
        if count_flops
        else 0
    )
    images = (final * std_v + mean_v).clamp(0, 1)
    return InversionResult(
        images=images.float().cpu(),
        labels=targets.cpu(),
        kept_mask=final_mask.cpu(),
        logits=logits.cpu(),
        loss=final_loss.float().cpu(),
        confidence=torch.softmax(logits, dim=1).gather(1, targets.view(-1, 1)).squeeze(1).cpu(),
        grid=geometry.grid,
        patch_size=geometry.patch_size,
        iterations=config.iterations,
        flops=flops,
        seconds=seconds,
    )


def invert_packed(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Generator]],
    config: InversionConfig,
    **kwargs,
) -> list[InversionResult]:
    """Invert several ``(targets, generator)`` batches in one engine call, one result per batch.

    The teacher runs one forward over all their images per iteration while each batch keeps its own
    randomness, batch mean and policy state (:mod:`smi_core.packing`): the images are those of
    :func:`invert` on each batch alone, up to the rounding of kernels chosen for the larger shape.
    Keyword arguments are :func:`invert`'s; ``seconds`` and ``flops`` are the call's, shared by images.
    """
    if not batches:
        raise ValueError("batches: expected at least one (targets, generator) pair")
    for targets, _ in batches:
        if targets.ndim != 1 or targets.numel() == 0:
            raise ValueError("targets: every packed batch needs a non-empty 1-D tensor of class indices")
    streams = BatchStreams([t.shape[0] for t, _ in batches], [g for _, g in batches])
    whole = invert(model, torch.cat([t for t, _ in batches]), config, streams, **kwargs)
    per_target = images_per_target(config.selection)
    return whole.split([n * per_target for n in streams.sizes])
