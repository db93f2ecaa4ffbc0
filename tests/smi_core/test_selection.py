import pytest
import torch

from smi_core.config import SelectionConfig, StopSchedule
from smi_core.selection import (
    DensePolicy,
    images_per_target,
    keep_random,
    keep_top_salient,
    make_policy,
    tokens_per_iteration,
)


def test_keep_top_salient_keeps_highest_and_sorts():
    kept = torch.tensor([[2, 5, 7, 9]])
    sal = torch.tensor([[0.1, 0.9, 0.05, 0.5]])
    assert keep_top_salient(kept, sal, 2).tolist() == [[5, 9]]
    with pytest.raises(ValueError, match="num_keep"):
        keep_top_salient(kept, sal, 0)


def test_keep_random_is_reproducible_subset():
    kept = torch.arange(20).view(1, -1)
    a = keep_random(kept, 7, torch.Generator().manual_seed(0))
    b = keep_random(kept, 7, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1, 7) and torch.all(a[:, 1:] > a[:, :-1])


def test_paper_schedule_token_counts_are_exact():
    schedule = StopSchedule()
    assert schedule.kept_counts(196) == [138, 97, 68, 48]
    counts = tokens_per_iteration(SelectionConfig("smi", schedule), 196, 4000)
    assert counts[:50] == [196] * 50 and counts[50:100] == [138] * 50
    assert counts[100:200] == [97] * 100 and counts[200:300] == [68] * 100 and counts[300:] == [48] * 3700
    assert tokens_per_iteration(SelectionConfig("dense"), 196, 10) == [196] * 10


def test_policy_asks_for_saliency_the_iteration_before_each_stop():
    policy = make_policy(SelectionConfig("smi", StopSchedule((3, 6), (0.5, 0.5))), 8)
    assert [i for i in range(10) if policy.needs_saliency(i)] == [2, 5]
    kept = torch.arange(8).view(1, -1)
    new = policy.update(2, kept, torch.arange(8.0).view(1, -1), torch.Generator())
    assert new.tolist() == [[4, 5, 6, 7]]
    assert policy.update(3, new, None, torch.Generator()) is new
    with pytest.raises(RuntimeError, match="saliency"):
        policy.update(5, new, None, torch.Generator())
    assert isinstance(make_policy(SelectionConfig("dense"), 8), DensePolicy)
    assert not make_policy(SelectionConfig("random", StopSchedule((3,), (0.5,))), 8).needs_saliency(2)


def test_accumulated_saliency_sums_every_forward_before_a_stop():
    config = SelectionConfig("smi", StopSchedule((3, 5), (0.5, 0.5)), saliency="accumulated")
    policy = make_policy(config, 4)
    assert [i for i in range(8) if policy.needs_saliency(i)] == [0, 1, 2, 3, 4]
    g = torch.Generator()
    # tokens arrive in view order (a flip): token j is canonical patch kept[0, j]
    kept = torch.tensor([[3, 2, 1, 0]])
    early = torch.tensor([[0.0, 0.1, 0.8, 0.9]])  # patches 0 and 1 salient on two views
    late = torch.tensor([[0.6, 0.5, 0.1, 0.0]])  # patches 3 and 2 on the view before the stop
    assert policy.update(0, kept, early, g) is kept and policy.update(1, kept, early, g) is kept
    assert policy.update(2, kept, late, g).tolist() == [[0, 1]]  # sums: 1.8, 1.7, 0.7, 0.6
    instant = make_policy(SelectionConfig("smi", config.schedule), 4)
    assert instant.update(2, kept, late, g).tolist() == [[2, 3]]
    # after the stop only kept patches add up; the next stop ranks them on their whole sum
    now = torch.tensor([[0, 1]])
    assert policy.update(3, now, torch.tensor([[0.0, 0.2]]), g) is now
    assert policy.update(4, now, torch.tensor([[0.3, 0.4]]), g).tolist() == [[1]]  # 2.1 vs 2.3


def test_final_phase_starts_at_the_last_stop():
    assert make_policy(SelectionConfig("smi", StopSchedule((3, 6), (0.5, 0.5))), 8).final_phase_start() == 6
    assert make_policy(SelectionConfig("dense"), 8).final_phase_start() == 0


def test_rejoin_brings_every_patch_back_and_starts_the_final_phase():
    config = SelectionConfig("smi", StopSchedule((3, 6), (0.5, 0.5)), rejoin=8)
    policy = make_policy(config, 8)
    assert policy.final_phase_start() == 8
    kept = torch.tensor([[4, 5]])
    assert policy.update(6, kept, None, torch.Generator()) is kept
    assert policy.update(7, kept, None, torch.Generator()).tolist() == [list(range(8))]
    assert tokens_per_iteration(config, 8, 10) == [8, 8, 8, 4, 4, 4, 2, 2, 8, 8]
    with pytest.raises(ValueError, match="rejoin: must come after the last stop"):
        SelectionConfig("smi", StopSchedule((3, 6), (0.5, 0.5)), rejoin=6)
    with pytest.raises(ValueError, match="rejoin: expected an iteration"):
        SelectionConfig("smi", rejoin=True)


def test_rebirth_lets_the_most_salient_patches_leave_and_counts_its_images():
    config = SelectionConfig("rebirth", StopSchedule((2, 4), (0.5, 0.5)))
    policy = make_policy(config, num_patches=4)
    kept = torch.arange(4).view(1, 4)
    assert policy.needs_saliency(1) and not policy.needs_saliency(2)
    left = policy.update(1, kept, torch.tensor([[0.1, 0.9, 0.2, 0.8]]), torch.Generator())
    assert left.tolist() == [[0, 2]]  # 1 and 3, the most salient, left
    assert images_per_target(config) == 3 and images_per_target(SelectionConfig("smi")) == 1
    with pytest.raises(ValueError, match="rejoin"):
        SelectionConfig("rebirth", StopSchedule((2,), (0.5,)), rejoin=3)
