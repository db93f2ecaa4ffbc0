"""Views for live-teacher distillation: flip/shift, photometric jitter, adversarial student-teacher steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.evaluate.kd_views import (
    NO_AUGMENT,
    KDAugmentConfig,
    augment_views,
    flip_shift,
    kd_adversarial,
    kd_divergence,
    mix_pairs,
    photometric,
)


def images(n: int = 6, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Tanh(), nn.Linear(16, 4))


def test_flip_without_shift_gives_each_image_or_its_mirror():
    x = images()
    out = flip_shift(x, torch.Generator().manual_seed(1), max_shift=0)
    for a, b in zip(x, out):
        assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
    assert not torch.equal(out, x) and not torch.equal(out, x.flip(-1))  # some flipped, some not


def test_shift_moves_content_by_at_most_max_shift():
    x = torch.zeros(4, 3, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel, far from the border
    out = flip_shift(x, torch.Generator().manual_seed(2), max_shift=2, flip=False)
    for img in out:
        (r, c) = (img[0] == 1).nonzero()[0].tolist()
        assert abs(r - 8) <= 2 and abs(c - 8) <= 2


def test_mix_pairs_blends_or_pastes_other_images_of_the_batch():
    x = torch.stack([torch.full((3, 16, 16), float(v)) for v in (0.0, 0.25, 0.5, 0.75, 1.0, 0.125, 0.375, 0.625)])
    out = mix_pairs(x, torch.Generator().manual_seed(4), fraction=1.0)
    values = set(x[:, 0, 0, 0].tolist())
    changed = 0
    for a, b in zip(x, out):
        if torch.equal(a, b):
            continue
        changed += 1
        pixels = set(b.flatten().tolist())
        if pixels <= values:  # cutmix: a box of one other image pasted into this one
            assert len(pixels) <= 2
        else:  # mixup: one blended value everywhere, between the two
            assert len(pixels) == 1 and 0 <= pixels.pop() <= 1
    assert changed >= 4
    assert torch.equal(mix_pairs(x, torch.Generator().manual_seed(4), fraction=0.0), x)
    assert torch.equal(out, mix_pairs(x, torch.Generator().manual_seed(4), fraction=1.0))


def test_channel_shuffle_permutes_channels_and_jitter_stays_in_range():
    x = images()
    out = photometric(x, torch.Generator().manual_seed(3), jitter=0.0, shuffle_channels=True)
    for a, b in zip(x, out):
        assert sorted(float(c.sum()) for c in a) == pytest.approx(sorted(float(c.sum()) for c in b))
    jittered = photometric(x, torch.Generator().manual_seed(3), jitter=0.9, shuffle_channels=False)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, x)


def test_views_are_reproducible_from_the_generator():
    x = images()
    cfg = KDAugmentConfig(adversarial_eps=0.0)
    a, labels = augment_views(x, torch.Generator().manual_seed(5), cfg)
    b, _ = augment_views(x, torch.Generator().manual_seed(5), cfg)
    assert torch.equal(a, b) and labels is None
    same, _ = augment_views(x, torch.Generator().manual_seed(5), NO_AUGMENT)
    assert torch.equal(same, x)


def test_adversarial_step_raises_the_divergence_within_its_budget():
    x = images()
    student, teacher = tiny_net(0), tiny_net(1)
    before = kd_divergence(student(x), teacher(x), 4.0)
    moved, clean_logits = kd_adversarial(student, teacher, x, eps=0.5, temperature=4.0)
    assert torch.allclose(clean_logits, teacher(x)) and not clean_logits.requires_grad
    after = kd_divergence(student(moved), teacher(moved), 4.0)
    assert after > before
    assert (moved - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert not moved.requires_grad and all(p.grad is None for p in student.parameters())


def test_adversarial_views_double_the_batch_and_need_both_models():
    x = images()
    cfg = KDAugmentConfig(adversarial_eps=0.5)
    teacher = tiny_net(1)
    out, labels = augment_views(x, torch.Generator().manual_seed(0), cfg, student=tiny_net(0), teacher=teacher)
    assert out.shape == (2 * len(x), *x.shape[1:])
    with torch.no_grad():  # every view labelled by the teacher, the clean half from the adversarial step's pass
        assert labels is not None and torch.allclose(labels, teacher(out), atol=1e-6)
    plain, plain_labels = augment_views(x, torch.Generator().manual_seed(0), KDAugmentConfig(adversarial_eps=0.0),
                                        teacher=teacher)
    with torch.no_grad():
        assert plain_labels is not None and torch.allclose(plain_labels, teacher(plain), atol=1e-6)
    with pytest.raises(ValueError, match="needs the student and the teacher"):
        augment_views(x, torch.Generator().manual_seed(0), cfg)


@pytest.mark.parametrize("kwargs, field", [
    ({"max_shift": -1}, "max_shift"), ({"colour_jitter": 1.0}, "colour_jitter"), ({"adversarial_eps": -0.1}, "adversarial_eps"),
    ({"mix": 1.2}, "mix"),
])
def test_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        KDAugmentConfig(**kwargs)
