import pytest

from smi_core.config import InversionConfig, LossWeights, SelectionConfig, StopSchedule


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: StopSchedule((50, 100), (0.3, 1.0)), "schedule.ratios"),
        (lambda: StopSchedule((50, 100), (-0.1, 0.3)), "schedule.ratios"),
        (lambda: StopSchedule((100, 50), (0.3, 0.3)), "schedule.iterations"),
        (lambda: StopSchedule((50, 50), (0.3, 0.3)), "schedule.iterations"),
        (lambda: StopSchedule((0, 50), (0.3, 0.3)), "schedule.iterations"),
        (lambda: StopSchedule((50,), (0.3, 0.3)), "schedule.ratios"),
        (lambda: InversionConfig(iterations=100, selection=SelectionConfig("smi", StopSchedule((50, 100), (0.3, 0.3)))), "schedule.iterations"),
        (lambda: InversionConfig(iterations=0), "iterations"),
        (lambda: InversionConfig(lr=0), "lr"),
        (lambda: InversionConfig(betas=(0.5, 1.2)), "betas"),
        (lambda: SelectionConfig("sparse"), "selection.kind"),
        (lambda: SelectionConfig("smi", saliency="mean"), "selection.saliency"),
        (lambda: LossWeights(tv_l2=-1.0), "loss.tv_l2"),
        (lambda: LossWeights(ce=float("nan")), "loss.ce"),
    ],
)
def test_bad_configs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


def test_defaults_are_smi_paper():
    c = InversionConfig()
    assert c.iterations == 4000 and c.lr == 0.25 and c.betas == (0.5, 0.99)
    assert c.selection.schedule.iterations == (50, 100, 200, 300) and c.selection.schedule.ratios == (0.3,) * 4
    assert c.loss.ce == 1 and c.loss.tv_l2 == 1e-4
    # a dense run does not care about the stop schedule
    InversionConfig(iterations=10, selection=SelectionConfig("dense"))
