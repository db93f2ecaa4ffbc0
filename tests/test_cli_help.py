"""The CLI documents itself: every argument of every subcommand has help text, defaults are shown, --version."""

from __future__ import annotations

import argparse

import pytest

from pipeline import cli
from pipeline.evaluate.distill import DistillConfig
from pipeline.evaluate.kd_views import KDAugmentConfig


def _parsers(parser: argparse.ArgumentParser, name: str = "smi-synth"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_argument_has_help_and_defaults_are_shown():
    parsers = list(_parsers(cli.build_parser()))
    assert len(parsers) == 1 + len(cli.COMMANDS)
    for name, parser in parsers:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help.strip(), f"{name}: {label} has no help text"
        text = parser.format_help()
        for action in parser._actions:
            default = action.default
            if action.option_strings and default not in (None, argparse.SUPPRESS) and not isinstance(default, bool):
                assert f"(default: {default})" in " ".join(text.split()), f"{name}: default of {action.dest} not shown"
    distill_help = " ".join(dict(parsers)["smi-synth distill"].format_help().split())
    for needle in ("--epochs EPOCHS passes over the corpus, instead of --steps", "--steps STEPS optimizer steps",
                   "--workers", "--save DIR", "--checkpoint DIR",
                   "--amp {auto,on,off}", "out corpus folder"):
        assert needle in distill_help


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("smi-synth ") and out.split()[1] == cli.package_version() and out.split()[1][0].isdigit()


def test_distill_hyper_parameter_defaults_are_the_libraries():
    """The CLI's distillation defaults are DistillConfig's (the CLI spells them out to stay import-light)."""
    distill = dict(_parsers(cli.build_parser()))["smi-synth distill"]
    defaults = {a.dest: a.default for a in distill._actions}
    config = DistillConfig()
    for name in ("lr", "temperature", "batch_size"):  # the CLI does not expose weight_decay
        assert defaults[name] == getattr(config, name), name
    views = KDAugmentConfig()
    for name in ("max_shift", "colour_jitter", "channel_shuffle", "adversarial_eps", "mix"):  # the CLI has no --no-flip
        assert defaults[name] == getattr(views, name), name
