import torch

from smi_core.config import SelectionConfig, StopSchedule
from smi_core.flops import iteration_flops, schedule_flops, total_flops, vit_iteration_flops
from smi_core.vit import vit_geometry
from tests.smi_core.vit_models import tiny_vit

CPU = torch.device("cpu")


def test_iteration_flops_grow_with_kept_tokens_and_match_linear_layers():
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    counts = [iteration_flops(model, geo, k, device=CPU) for k in (1, 4, 8, 16)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    # the qkv projection alone: forward 2*T*D*3D plus the input-gradient matmul of the same size, per block
    assert counts[-1] > 2 * 2 * (16 + 1) * 48 * 3 * 48 * len(model.blocks)


def test_schedule_flops_is_the_sum_over_iterations():
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    sel = SelectionConfig("smi", StopSchedule((2, 4), (0.5, 0.5)))
    per = {k: iteration_flops(model, geo, k, device=CPU) for k in (16, 8, 4)}
    assert schedule_flops(model, geo, sel, 6, 3, device=CPU) == 3 * (2 * per[16] + 2 * per[8] + 2 * per[4])
    dense = schedule_flops(model, geo, SelectionConfig("dense"), 6, 3, device=CPU)
    assert dense == 3 * 6 * per[16]


def _dims(model) -> dict:
    return {"patch_size": tuple(model.patch_embed.patch_size), "num_prefix_tokens": model.num_prefix_tokens,
            "embed_dim": model.embed_dim, "depth": len(model.blocks), "mlp_ratio": model.blocks[0].mlp.fc1.out_features
            / model.embed_dim, "num_classes": model.num_classes}


def test_the_formula_is_what_the_counter_counts_where_attention_is_counted():
    """On the meta device the counter sees attention as matrix products: it must match the formula exactly."""
    with torch.device("meta"):
        model = tiny_vit("vit").requires_grad_(False)
    geo = vit_geometry(model)
    for kept in (1, 5, geo.num_patches):
        assert iteration_flops(model, geo, kept, device=torch.device("meta")) == vit_iteration_flops(kept, **_dims(model))


def test_total_flops_sums_the_formula_over_the_schedule():
    model = tiny_vit("vit")
    geo = vit_geometry(model)
    sel = SelectionConfig("smi", StopSchedule((2, 4), (0.5, 0.5)))
    per = {k: vit_iteration_flops(k, **_dims(model)) for k in (16, 8, 4)}
    assert total_flops(lambda k: per[k], sel, geo.num_patches, 6, 3) == 3 * (2 * per[16] + 2 * per[8] + 2 * per[4])
