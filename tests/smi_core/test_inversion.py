from dataclasses import replace

import pytest
import timm
import torch
from torch import nn

from smi_core import (
    InversionConfig,
    LossWeights,
    SelectionConfig,
    StopSchedule,
    invert,
    invert_packed,
    tokens_per_iteration,
)
from smi_core.inversion import patch_mask_to_pixels
from smi_core import losses
from smi_core.losses import BNStatisticsPrior
from smi_core.vit import vit_geometry
from tests.smi_core.vit_models import tiny_vit

SCHEDULE = StopSchedule((4, 8, 12), (0.3, 0.3, 0.3))


def _config(kind="smi", iterations=20, **kw):
    return InversionConfig(iterations=iterations, selection=SelectionConfig(kind, SCHEDULE), **kw)


def _run(model, config, seed=0, targets=(1, 2, 3), **kw):
    return invert(model, torch.tensor(targets), config, torch.Generator().manual_seed(seed), **kw)


def test_result_shapes_ranges_and_counts():
    model = tiny_vit("vit")
    r = _run(model, _config())
    geo = vit_geometry(model)
    assert r.images.shape == (3, 3, 32, 32)
    assert 0 <= r.images.min() and r.images.max() <= 1
    assert r.kept_mask.shape == (3, geo.num_patches) and r.kept_mask.dtype == torch.bool
    assert r.logits.shape == (3, 7) and r.loss.shape == r.confidence.shape == (3,)
    assert r.iterations == 20 and r.flops > 0 and r.seconds > 0
    probs = torch.softmax(r.logits, 1)[torch.arange(3), r.labels]
    torch.testing.assert_close(r.confidence, probs)
    assert r.kept_indices(0) == torch.nonzero(r.kept_mask[0]).flatten().tolist()


def test_same_seed_is_bit_identical_and_other_seed_differs():
    model = tiny_vit("deit")
    a, b = _run(model, _config()), _run(model, _config())
    for name in ("images", "kept_mask", "logits", "loss"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.images, _run(model, _config(), seed=1).images)


def test_stopped_patches_get_no_gradient_and_never_change():
    model = tiny_vit("registers")
    geo = vit_geometry(model)
    states = []
    config = _config(loss=LossWeights(tv_l1=0.1, tv_l2=0.1, l2=0.01), keep_best=False)
    _run(model, config, observer=lambda s: states.append((s.kept.clone(), s.pixels.clone(), s.grad.clone())))
    # kept counts seen by each forward follow the schedule exactly
    assert [k.shape[1] for k, _, _ in states] == tokens_per_iteration(config.selection, geo.num_patches, 20)
    for t in SCHEDULE.iterations:
        kept_after = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, states[t][0], True)
        stopped = ~patch_mask_to_pixels(kept_after, geo).expand(-1, 3, -1, -1)
        assert stopped.any()
        frozen = states[t - 1][1][stopped]  # values after the step that preceded the stop
        for _, pixels, grad in states[t:]:
            assert torch.count_nonzero(grad[stopped]) == 0
            assert torch.equal(pixels[stopped], frozen)
    # kept sets only shrink: once stopped, a patch never comes back
    for (k0, _, _), (k1, _, _) in zip(states, states[1:]):
        m0 = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, k0, True)
        assert bool(m0.gather(1, k1).all())


def test_stopped_patches_under_the_prior_option_are_smoothed_but_never_seen_by_the_teacher():
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    selection = SelectionConfig("smi", SCHEDULE, stopped="prior")
    config = InversionConfig(iterations=20, selection=selection, loss=LossWeights(tv_l2=0.5), keep_best=False)
    states = []
    smoothed = _run(model, config, observer=lambda s: states.append((s.kept.clone(), s.pixels.clone(), s.grad.clone())))
    assert [k.shape[1] for k, _, _ in states] == tokens_per_iteration(selection, geo.num_patches, 20)
    last = SCHEDULE.iterations[-1]
    kept_after = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, states[last][0], True)
    stopped = ~patch_mask_to_pixels(kept_after, geo).expand(-1, 3, -1, -1)
    _, before, _ = states[last - 1]
    _, after, grad = states[-1]
    assert torch.count_nonzero(grad[stopped]) > 0  # the TV prior still reaches them
    assert not torch.equal(after[stopped], before[stopped])
    pinned = _run(model, InversionConfig(iterations=20, selection=SelectionConfig("smi", SCHEDULE),
                                         loss=LossWeights(tv_l2=0.5), keep_best=False))
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., 1:] - x[..., :-1]).pow(2).mean()  # noqa: E731
    assert tv(smoothed.images) < tv(pinned.images)
    with pytest.raises(ValueError, match="selection.stopped"):
        SelectionConfig("smi", SCHEDULE, stopped="thawed")


def test_accumulated_saliency_with_one_forward_before_the_stop_is_the_instant_one():
    """A stop at iteration 1 sees one forward either way: the sum must map tokens back through roll and flip."""
    model = tiny_vit("deit")
    runs = {}
    for saliency in ("instant", "accumulated"):
        selection = SelectionConfig("smi", StopSchedule((1,), (0.5,)), saliency=saliency)
        config = InversionConfig(iterations=6, selection=selection)  # default augment: roll and flip
        runs[saliency] = _run(model, config, seed=3)
    assert torch.equal(runs["instant"].kept_mask, runs["accumulated"].kept_mask)
    assert torch.equal(runs["instant"].images, runs["accumulated"].images)
    many = InversionConfig(iterations=20, selection=SelectionConfig("smi", SCHEDULE, saliency="accumulated"))
    a, b = _run(model, many), _run(model, many)
    assert torch.equal(a.kept_mask, b.kept_mask) and torch.equal(a.images, b.images)
    assert a.kept_mask.sum(1).tolist() == [SCHEDULE.kept_counts(vit_geometry(model).num_patches)[-1]] * 3


def test_last_iterate_without_keep_best_is_the_final_image():
    model = tiny_vit("vit")
    states = []
    r = _run(model, _config(keep_best=False), observer=lambda s: states.append(s.pixels.clone()))
    mean, std = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1), torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(r.images, (states[-1] * std + mean).clamp(0, 1))


def test_best_iterate_is_a_real_copy_and_not_the_last():
    model = tiny_vit("vit")
    snapshots, losses = [], []
    # a large step size makes the objective oscillate, so the best iterate is an earlier one
    config = _config(iterations=30, lr=2.0)
    previous = {"pixels": None}

    def observe(s):
        # the loss belongs to the iterate BEFORE this step
        snapshots.append(previous["pixels"] if previous["pixels"] is not None else None)
        losses.append(s.loss.clone())
        previous["pixels"] = s.pixels.clone()

    r = _run(model, config, observer=observe)
    final_phase = SCHEDULE.iterations[-1]
    loss = torch.stack(losses)[final_phase:]  # (T - final_phase, B): the best is sought there
    best_iter = loss.argmin(0) + final_phase
    assert (best_iter != config.iterations - 1).any(), best_iter
    torch.testing.assert_close(r.loss, loss.min(0).values)
    mean, std = torch.tensor(model.pretrained_cfg["mean"]).view(3, 1, 1), torch.tensor(model.pretrained_cfg["std"]).view(3, 1, 1)
    assert r.kept_mask.sum(1).tolist() == [SCHEDULE.kept_counts(16)[-1]] * 3  # carries the final mask
    for i, t in enumerate(best_iter.tolist()):
        expected = (snapshots[t][i] * std + mean).clamp(0, 1)
        torch.testing.assert_close(r.images[i], expected, atol=0, rtol=0)


def test_pixels_stay_in_the_valid_range_of_the_normalisation():
    model = tiny_vit("vit")
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    states = []
    _run(model, _config(lr=5.0), observer=lambda s: states.append(s.pixels.clone()))
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for p in states:
        img = p * std + mean
        assert img.min() >= -1e-6 and img.max() <= 1 + 1e-6


def test_inversion_learns_the_target():
    """Dense and sparse inversion both raise the teacher's confidence well above chance."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48,
                              depth=2, num_heads=3, num_classes=7).eval().requires_grad_(False)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)  # timm heads start near zero; make the logits input-sensitive
    for kind in ("dense", "smi"):
        r = _run(model, _config(kind, iterations=60, lr=0.1))
        assert r.confidence.min() > 0.9, (kind, r.confidence)


def test_dense_policy_on_a_model_without_class_token_and_smi_refuses():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48,
                              depth=1, num_heads=3, num_classes=5, class_token=False, global_pool="avg").eval()
    r = _run(model, _config("dense", iterations=3), targets=(0, 4))
    assert r.kept_mask.all()
    with pytest.raises(ValueError, match="selection.kind"):
        _run(model, _config("smi"), targets=(0,))


def test_random_policy_and_priors_and_bf16_autocast_run():
    model = tiny_vit("deit3_no_embed_class")
    r = _run(model, _config("random", loss=LossWeights(tv_l1=1e-3, l2=1e-4, patch_entropy=0.1), keep_best=False))
    assert r.kept_mask.sum(1).tolist() == [SCHEDULE.kept_counts(16)[-1]] * 3
    r = _run(model, _config("smi", iterations=14), autocast_dtype=torch.bfloat16)
    assert torch.isfinite(r.loss).all()


def test_bn_prior_from_a_cnn():
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    model = tiny_vit("vit")
    r = _run(model, _config(loss=LossWeights(bn_prior=0.1)), bn_prior=BNStatisticsPrior(cnn))
    assert torch.isfinite(r.loss).all()
    assert not any(m._forward_hooks for m in cnn.modules())  # hooks removed after every use
    with pytest.raises(ValueError, match="loss.bn_prior"):
        _run(model, _config(loss=LossWeights(bn_prior=0.1)))


@pytest.mark.parametrize(
    "targets, match", [((7,), "targets"), ((-1,), "targets")]
)
def test_bad_targets(targets, match):
    with pytest.raises(ValueError, match=match):
        _run(tiny_vit("vit"), _config(), targets=targets)


def test_non_vit_and_bad_image_size_raise_value_error():
    with pytest.raises(ValueError, match="model"):
        _run(nn.Sequential(nn.Conv2d(3, 3, 1)), _config())
    with pytest.raises(ValueError, match="img_size"):
        _run(tiny_vit("dynamic_size"), _config(), img_size=(30, 30))


# --- zoom / colour shift views ----------------------------------------------------------------------

from smi_core import AugmentConfig  # noqa: E402

PII = AugmentConfig(max_roll_fraction=0.0, zoom=(0.5, 1.0), colour_shift=0.2)


def test_dense_with_zoom_and_colour_shift_is_finite_and_reproducible():
    model = tiny_vit("vit")
    config = InversionConfig(iterations=12, selection=SelectionConfig("dense"), augment=PII)
    a, b = _run(model, config), _run(model, config)
    assert torch.isfinite(a.images).all() and torch.isfinite(a.logits).all()
    assert torch.equal(a.images, b.images) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.images, _run(model, config, seed=1).images)
    plain = InversionConfig(iterations=12, selection=SelectionConfig("dense"), augment=AugmentConfig(max_roll_fraction=0.0))
    assert not torch.equal(a.images, _run(model, plain).images)
    per_step = InversionConfig(iterations=12, selection=SelectionConfig("dense"),
                               augment=AugmentConfig(zoom=(0.5, 1.0), colour_shift=0.2, per_sample=False))
    assert torch.isfinite(_run(model, per_step).images).all()


@pytest.mark.parametrize("saliency", ["instant", "accumulated"])
def test_smi_with_zoom_keeps_the_schedule_and_pins_frozen_patches(saliency):
    model = tiny_vit("registers")
    geo = vit_geometry(model)
    selection = SelectionConfig("smi", SCHEDULE, saliency=saliency)
    config = InversionConfig(iterations=20, selection=selection, loss=LossWeights(tv_l2=0.1), augment=PII, keep_best=False)
    states = []
    r = _run(model, config, observer=lambda s: states.append((s.kept.clone(), s.pixels.clone(), s.grad.clone())))
    assert [k.shape[1] for k, _, _ in states] == tokens_per_iteration(selection, geo.num_patches, 20)
    for kept, _, _ in states:  # valid, distinct, sorted canonical indices
        assert 0 <= int(kept.min()) and int(kept.max()) < geo.num_patches
        assert torch.equal(kept, torch.sort(kept, dim=1).values) and bool((kept[:, 1:] > kept[:, :-1]).all())
    last = SCHEDULE.iterations[-1]
    kept_after = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, states[last][0], True)
    assert torch.equal(r.kept_mask, kept_after)
    stopped = ~patch_mask_to_pixels(kept_after, geo).expand(-1, 3, -1, -1)
    frozen = states[last - 1][1][stopped]
    for _, pixels, grad in states[last:]:
        assert torch.count_nonzero(grad[stopped]) == 0 and torch.equal(pixels[stopped], frozen)
    assert torch.equal(r.images, _run(model, config).images)


def test_smi_zoom_forward_sees_the_scheduled_token_count_and_stopped_pixels_get_no_teacher_gradient():
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    seen = []
    hook = model.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    selection = SelectionConfig("smi", SCHEDULE, stopped="prior")
    config = InversionConfig(iterations=20, selection=selection, loss=LossWeights(tv_l2=0.0), augment=PII, keep_best=False)
    states = []
    _run(model, config, observer=lambda s: states.append((s.kept.clone(), s.grad.clone())))
    hook.remove()
    prefix = geo.num_prefix_tokens
    counts = tokens_per_iteration(selection, geo.num_patches, 20)
    assert [n - prefix for n in seen[:20]] == counts  # the 21st forward is the final full-image logits
    for kept, grad in states[SCHEDULE.iterations[0]:]:
        mask = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, kept, True)
        stopped = ~patch_mask_to_pixels(mask, geo).expand(-1, 3, -1, -1)
        assert torch.count_nonzero(grad[stopped]) == 0  # no prior weight: only the teacher could reach them


# --- the pyramid parametrisation ------------------------------------------------------------------------


def _prior_config(kind="smi", **kw):
    return InversionConfig(iterations=20, selection=SelectionConfig(kind, SCHEDULE, stopped="prior"), **kw)


def test_pyramid_images_stay_in_range_learn_and_are_reproducible():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=48,
                              depth=2, num_heads=3, num_classes=7).eval().requires_grad_(False)
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0)
    states = []
    config = InversionConfig(iterations=60, lr=0.1, selection=SelectionConfig("smi", SCHEDULE, stopped="prior"),
                             pyramid=(2, 4))
    a = _run(model, config, observer=lambda s: states.append(s.pixels.clone()))
    assert a.confidence.min() > 0.9, a.confidence
    assert all(p.min() >= -1 - 1e-5 and p.max() <= 1 + 1e-5 for p in states)  # timm's default mean/std 0.5
    b = _run(model, config)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, _run(model, replace(config, pyramid=())).images)


def test_pyramid_moves_low_frequencies_faster_than_pixels_alone():
    """With only the CE term, a pyramid's update is smoother: less energy between neighbouring pixels."""
    model = tiny_vit("vit")
    def roughness(config):
        states = []
        _run(model, config, observer=lambda s: states.append(s.pixels.clone()))
        step = states[-1] - states[0]
        return float((step[..., 1:, :] - step[..., :-1, :]).pow(2).mean() / step.pow(2).mean())
    plain = _prior_config("dense", loss=LossWeights(tv_l2=0.0), augment=AugmentConfig(enabled=False))
    assert roughness(replace(plain, pyramid=(2, 4, 8))) < 0.8 * roughness(plain)


def test_pyramid_refuses_frozen_stopped_patches_and_bad_scales():
    with pytest.raises(ValueError, match="stopped"):
        _config(pyramid=(2,))
    for bad in ((1,), (2, 2), (2.0,), (True,)):
        with pytest.raises(ValueError, match="pyramid"):
            _prior_config(pyramid=bad)


@pytest.mark.parametrize("stopped", ["frozen", "prior"])
def test_rejoined_patches_are_seen_and_moved_again_and_the_image_is_all_kept(stopped):
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    selection = SelectionConfig("smi", SCHEDULE, stopped=stopped, rejoin=16)
    config = InversionConfig(iterations=20, selection=selection, loss=LossWeights(tv_l2=0.5))
    states = []
    result = _run(model, config, observer=lambda s: states.append((s.kept.clone(), s.pixels.clone(), s.grad.clone())))
    assert [k.shape[1] for k, _, _ in states] == tokens_per_iteration(selection, geo.num_patches, 20)
    assert [k.shape[1] for k, _, _ in states[16:]] == [geo.num_patches] * 4
    kept_before = torch.zeros(3, geo.num_patches, dtype=torch.bool).scatter_(1, states[15][0], True)
    stopped_px = ~patch_mask_to_pixels(kept_before, geo).expand(-1, 3, -1, -1)
    _, before, _ = states[15]
    _, after, grad = states[-1]
    assert not torch.equal(after[stopped_px], before[stopped_px])  # the stopped pixels move again
    assert torch.count_nonzero(grad[stopped_px]) > 0
    assert bool(result.kept_mask.all())  # the final phase saw every patch
    with pytest.raises(ValueError, match="rejoin: iteration 20 is not below"):
        InversionConfig(iterations=20, selection=SelectionConfig("smi", SCHEDULE, rejoin=20))


def test_rebirth_keeps_the_image_as_each_stop_leaves_it():
    """One run yields the image as each stop left it and the final one, target by target; each kept mask is the
    patches that evolved until then; packed batches give the same images."""
    model = tiny_vit("vit")
    config = InversionConfig(iterations=12, selection=SelectionConfig("rebirth", StopSchedule((4, 8), (1 / 3, 0.5)),
                                                                      stopped="prior"), keep_best=False)
    snapshots = {}

    def observe(state):
        snapshots[state.iteration] = state.pixels.clone()

    r = _run(model, config, targets=(1, 2), observer=observe, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert r.images.shape == (6, 3, 32, 32) and r.labels.tolist() == [1, 1, 1, 2, 2, 2]
    assert r.kept_mask.sum(1).tolist() == [16, 11, 6] * 2  # 16 patches: 5 leave at each stop
    masks = r.kept_mask.view(2, 3, -1)
    assert (masks[:, 1] <= masks[:, 0]).all() and (masks[:, 2] <= masks[:, 1]).all()  # only ever fewer
    for image, iteration in ((0, 3), (1, 7), (2, 11), (4, 7)):  # as stops 4 and 8 left them, and the last
        expected = (snapshots[iteration][image // 3] * 0.5 + 0.5).clamp(0, 1)
        torch.testing.assert_close(r.images[image], expected, atol=1e-6, rtol=0)
    saw = torch.softmax(r.logits, 1)[torch.arange(6), r.labels]
    torch.testing.assert_close(r.confidence, saw)  # the teacher's view of each whole image
    packed = invert_packed(model, [(torch.tensor([1, 2]), torch.Generator().manual_seed(0)),
                                   (torch.tensor([3]), torch.Generator().manual_seed(1))], config,
                           mean=(0.5,) * 3, std=(0.5,) * 3)
    assert [p.images.shape[0] for p in packed] == [6, 3]
    torch.testing.assert_close(packed[0].images, r.images, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="every stop must let a patch leave"):
        _run(model, replace(config, selection=SelectionConfig("rebirth", StopSchedule((4,), (0.01,)))))


def test_prior_gain_strengthens_the_priors_once_patches_have_left():
    """With ``loss.prior_gain`` the run is the same until the first stop, then TV weighs more."""
    weights = LossWeights(tv_l2=0.5, l2=0.1, prior_gain=1.0)
    assert weights.evolving(1.0) == weights and LossWeights(tv_l2=0.5).evolving(0.25) == LossWeights(tv_l2=0.5)
    assert weights.evolving(0.25) == replace(weights, tv_l2=2.0, l2=0.4)
    with pytest.raises(ValueError, match="loss.prior_gain"):
        LossWeights(prior_gain=-1.0)
    model = tiny_vit("vit")
    config = InversionConfig(iterations=12, selection=SelectionConfig("rebirth", StopSchedule((4, 8), (1 / 3, 0.5))),
                             keep_best=False, loss=LossWeights(tv_l2=0.5))
    plain, gained = (_run(model, replace(config, loss=replace(config.loss, prior_gain=g)), targets=(1,)) for g in (0, 1))
    torch.testing.assert_close(gained.images[0], plain.images[0])  # the image the first stop left
    tv = [losses.total_variation(r.images[1:], 2).sum() for r in (plain, gained)]
    assert tv[1] < tv[0]  # the later images under the stronger prior are smoother
