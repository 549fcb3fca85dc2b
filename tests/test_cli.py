"""The one CLI pattern: every command takes ``--config FILE`` and ``key=value`` overrides anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam3tune.cli import build_parser, main

COMMANDS = (
    ["train"],
    ["doctor"],
    ["eval"],
    ["predict"],
    ["demo"],
    ["data", "inspect"],
    ["data", "synth"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_takes_a_config_file_and_overrides(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    usage = capsys.readouterr().out
    assert "--config FILE" in usage and "key=value" in usage


def test_overrides_are_read_on_both_sides_of_options(tmp_path, capsys):
    args = build_parser().parse_args(["train", "loop.epochs=2", "--data", str(tmp_path), "optim.lr_text=1"])
    assert args.overrides == ["loop.epochs=2", "optim.lr_text=1"] and args.data == str(tmp_path)
    # an override after an option is applied (and checked), not rejected by argparse
    assert main(["train", "model.name=tiny", "--data", str(tmp_path), "optim.lr_vison=1e-4"]) == 2
    assert "unknown config key(s) optim.lr_vison" in capsys.readouterr().err


def test_paths_and_option_values_are_not_overrides(capsys, tmp_path):
    args = build_parser().parse_args(
        ["predict", "a.jpg", "device=cpu", "--prompt", "a=b", "photos/x=1.png", "overlays=false"]
    )
    assert args.images == [Path("a.jpg"), Path("photos/x=1.png")] and args.prompts == ["a=b"]
    assert args.overrides == ["device=cpu", "overlays=false"]
    args = build_parser().parse_args(["data", "inspect", "negatives=1", "--json", "data/", "prompts=p.yaml"])
    assert args.path == Path("data/") and args.overrides == ["negatives=1", "prompts=p.yaml"]
    assert main(["predict", "--model", "tiny", "--prompt", "x", str(tmp_path), "postprocess.nms=0.5"]) == 2
    assert "unknown config key(s) postprocess.nms" in capsys.readouterr().err


def test_a_bad_value_names_the_key(capsys, tmp_path):
    assert main(["data", "inspect", str(tmp_path), "max_objects_per_query=many"]) == 2
    assert "max_objects_per_query" in capsys.readouterr().err
    assert main(["demo", "steps=0", "--out", str(tmp_path / "demo")]) == 2
    assert "steps=0: must be at least 1" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out
    assert main(["data"]) == 2 and "ACTION" in capsys.readouterr().out
