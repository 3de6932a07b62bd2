"""`--help` tells a user what each flag does, its default and its choices, for every command."""

from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

import pytest

from service.cli import build_parser
from service.settings import ENV_PREFIX, Settings

COMMANDS = ("train", "evaluate", "export", "serve")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def flags(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.dest not in ("help",)]


def test_every_command_is_registered_with_a_description():
    parsers = subparsers()
    assert tuple(parsers) == COMMANDS
    for name, p in parsers.items():
        assert p.description and len(p.description) > 60, name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_says_what_it_does_and_its_default(command):
    p = subparsers()[command]
    for action in flags(p):
        text = action.help or ""
        bare = action.dest.replace("_", " ")
        assert len(text) > len(bare) + 10, (action.option_strings, text)
        assert "default" in text, (action.option_strings, text)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders_defaults_and_choices(command):
    p = subparsers()[command]
    text = p.format_help()
    for action in flags(p):
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text, action.dest
        shown = action.default
        if shown not in (None, False) and command != "serve":
            assert str(shown) in action.help % {"default": shown}, action.dest


def test_serve_flags_show_each_settings_default_choices_and_variable():
    p = subparsers()["serve"]
    by_dest = {a.dest: a for a in flags(p)}
    assert set(by_dest) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        action = by_dest[name]
        assert action.default is None  # not given: the environment or the default applies
        assert f"env {ENV_PREFIX}{name.upper()})" in action.help
        if get_origin(field.annotation) is Literal:
            assert tuple(action.choices) == get_args(field.annotation)
    assert "(default 512; env GRU_SERVE_MAX_HORIZON)" in by_dest["max_horizon"].help
    assert "(default auto; env GRU_SERVE_DEVICE)" in by_dest["device"].help
    assert "(default unset; env GRU_SERVE_TOKEN_SECRET)" in by_dest["token_secret"].help
    assert "(default false; env GRU_SERVE_ALLOW_SPINNING)" in by_dest["allow_spinning"].help
    assert by_dest["log_level"].choices == ("debug", "info", "warning", "error")
    assert by_dest["graph_optimization"].choices == ("disable", "basic", "extended", "all")


def test_evaluate_help_speaks_of_evaluating():
    p = subparsers()["evaluate"]
    csv = next(a for a in flags(p) if a.dest == "csv")
    assert not csv.help.startswith("train") and csv.help.startswith("backtest")
    assert "--benchmark" in p.description and "--out-dir" in p.description


def test_train_variant_and_benchmark_have_choices():
    parsers = subparsers()
    variant = next(a for a in flags(parsers["train"]) if a.dest == "variant")
    assert tuple(variant.choices) == ("cho2014", "cudnn") and variant.default == "cho2014"
    bench = next(a for a in flags(parsers["evaluate"]) if a.dest == "benchmark")
    assert tuple(bench.choices) == ("m3", "m1", "tourism")


def test_top_level_help_names_the_commands_and_version(capsys):
    parser = build_parser()
    text = parser.format_help()
    for command in COMMANDS:
        assert command in text
    assert "--version" in text
