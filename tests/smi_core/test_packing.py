"""Packed batches: one engine call for several batches gives each batch the images it gets alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smi_core import (
    AugmentConfig,
    InversionConfig,
    LossWeights,
    SelectionConfig,
    StopSchedule,
    invert,
    invert_packed,
)
from smi_core.losses import BNStatisticsPrior
from smi_core.packing import BatchStreams
from tests.smi_core.vit_models import tiny_vit

SCHEDULE = StopSchedule((4, 8, 12), (0.3, 0.3, 0.3))
BATCHES = [((1, 2, 3), 5), ((4, 0), 6), ((6, 6, 1), 7)]  # (targets, seed): unequal sizes, like a shard's last batch


def _config(kind: str = "smi", saliency: str = "instant", **kw) -> InversionConfig:
    return InversionConfig(iterations=16, loss=kw.pop("loss", LossWeights(tv_l1=1e-3, l2=1e-4)),
                           selection=SelectionConfig(kind, SCHEDULE, saliency=saliency), **kw)


def _alone_and_packed(model, config, **kw):
    kw.setdefault("count_flops", False)
    alone = [invert(model, torch.tensor(t), config, torch.Generator().manual_seed(s), **kw) for t, s in BATCHES]
    packed = invert_packed(model, [(torch.tensor(t), torch.Generator().manual_seed(s)) for t, s in BATCHES],
                           config, **kw)
    return alone, packed


def _assert_same_images(alone, packed) -> None:
    assert len(alone) == len(packed)
    for a, p in zip(alone, packed):
        assert torch.equal(a.labels, p.labels)
        assert torch.equal(a.kept_mask, p.kept_mask)  # the same stops: saliency, random draws and policy state
        # rounding of other kernel shapes only, grown over the iterations: within half a stored uint8 level
        torch.testing.assert_close(p.images, a.images, rtol=0, atol=0.5 / 255)
        torch.testing.assert_close(p.logits, a.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(p.loss, a.loss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind, saliency", [("smi", "instant"), ("smi", "accumulated"), ("random", "instant"),
                                            ("dense", "instant")])
def test_packed_batches_get_the_images_they_get_alone(kind, saliency) -> None:
    model = tiny_vit("deit")
    alone, packed = _alone_and_packed(model, _config(kind, saliency))
    _assert_same_images(alone, packed)
    # and not merely the same as any batch: the batches differ from each other
    assert not torch.allclose(packed[0].images, packed[2].images)


def test_each_packed_batch_keeps_its_own_bn_prior_statistic() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        cnn[1].running_mean.normal_(0, 1)
    model = tiny_vit("vit")
    alone, packed = _alone_and_packed(model, _config(loss=LossWeights(bn_prior=0.5)), bn_prior=BNStatisticsPrior(cnn))
    _assert_same_images(alone, packed)


def test_one_packed_batch_is_the_unpacked_engine_bit_for_bit() -> None:
    model = tiny_vit("registers")
    config = _config()
    a = invert(model, torch.tensor([1, 2]), config, torch.Generator().manual_seed(3))
    (p,) = invert_packed(model, [(torch.tensor([1, 2]), torch.Generator().manual_seed(3))], config)
    for name in ("images", "kept_mask", "logits", "loss", "confidence"):
        assert torch.equal(getattr(a, name), getattr(p, name)), name
    assert (p.flops, p.iterations) == (a.flops, a.iterations)


def test_flops_and_seconds_are_shared_out_by_images() -> None:
    model = tiny_vit("vit")
    _, packed = _alone_and_packed(model, _config(), count_flops=True)
    per_image = {p.flops / p.images.shape[0] for p in packed}
    assert len(per_image) == 1 and per_image.pop() > 0
    seconds = [p.seconds / p.images.shape[0] for p in packed]
    assert max(seconds) == pytest.approx(min(seconds))


def test_bad_packs_raise_value_error_naming_the_field() -> None:
    model = tiny_vit("vit")
    with pytest.raises(ValueError, match="batches"):
        invert_packed(model, [], _config())
    with pytest.raises(ValueError, match="batches"):
        BatchStreams([2, 0], [torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="batches"):
        BatchStreams([2], [torch.Generator(), torch.Generator()])
    zoom = InversionConfig(iterations=4, selection=SelectionConfig("dense"), augment=AugmentConfig(zoom=(0.5, 1.0)))
    with pytest.raises(ValueError, match="augment"):
        invert_packed(model, [(torch.tensor([1]), torch.Generator()), (torch.tensor([2]), torch.Generator())], zoom)
    invert_packed(model, [(torch.tensor([1]), torch.Generator())], zoom)  # one batch: the zoom view is fine
    streams = BatchStreams([1, 1], [torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="targets"):
        invert(model, torch.tensor([1, 2, 3]), _config(), streams)
