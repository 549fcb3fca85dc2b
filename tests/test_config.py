from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from sam3tune.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 8e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Run:
    name: str = "run"
    steps: int = 10
    mode: Literal["full", "lora"] = "full"
    amp: Literal["auto", "off", "on"] = "auto"
    enabled: bool = True
    resume: Path | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 5\noptim:\n  lr: 1e-4\n")
    cfg = load_config(Run, tmp_path / "c.yaml", ["optim.betas=[0.8, 0.9]", "mode=lora", "resume=/x"])
    assert cfg.steps == 5
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.mode == "lora"
    assert cfg.resume == Path("/x")
    assert cfg.name == "run"


def test_round_trip(tmp_path):
    cfg = load_config(Run, None, ["optim.lr=3e-3", "steps=7"])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Run, tmp_path / "out.yaml") == cfg
    assert to_dict(cfg)["optim"] == {"lr": 3e-3, "betas": [0.9, 0.999]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "optim.lrr"),
        ("steps=1.5", "steps: expected an integer"),
        ("mode=half", "mode: 'half' is not one of"),
        ("steps", "not of the form key=value"),
        ("optim=3", "optim: expected a mapping"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, [override])


def test_yaml_12_booleans_keep_off_and_on_as_strings(tmp_path):
    (tmp_path / "c.yaml").write_text("amp: off\nenabled: false\n")
    assert load_config(Run, tmp_path / "c.yaml").amp == "off"
    cfg = load_config(Run, None, ["amp=on", "enabled=true"])
    assert (cfg.amp, cfg.enabled) == ("on", True)
    with pytest.raises(ConfigError, match="enabled: expected true/false"):
        load_config(Run, None, ["enabled=yes"])


def test_shortcuts_become_quoted_overrides():
    from sam3tune.config import as_overrides, is_override, with_shortcuts

    assert with_shortcuts(["a=1"], {"data.root": Path("2024"), "model.name": None}) == [
        "a=1",
        'data.root="2024"',
    ]
    assert as_overrides({"loop": {"epochs": 2, "max_steps": None}, "prompts": ["a b"]}) == [
        "loop.epochs=2",
        "loop.max_steps=null",
        'prompts=["a b"]',
    ]
    assert is_override("optim.lr=1e-4") and not is_override("photos/x=1.png") and not is_override("=1")
