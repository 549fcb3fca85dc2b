"""``DataConfig``: defaults are the official recipe; YAML / override round trip; bad values rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam3tune.config import ConfigError, from_dict, load_config, to_dict
from sam3tune.data import DataConfig


def test_defaults_are_the_official_recipe():
    config = DataConfig()
    assert config.resolution == 1008 and config.target_mask_resolution == 1008
    assert config.negatives == "all" and config.max_objects_per_query == 200
    assert config.hflip is False  # neither official roboflow config has a flip transform


def test_overrides_parse_negatives_and_paths(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("root: /data/shapes\nresolution: 504\n")
    config = load_config(DataConfig, path, ["negatives=3", "mask_resolution=288", "hflip=true"])
    assert config.root == Path("/data/shapes") and config.resolution == 504
    assert config.negatives == 3 and config.target_mask_resolution == 288 and config.hflip
    assert load_config(DataConfig, None, ["negatives=none"]).negatives == "none"
    assert from_dict(DataConfig, to_dict(config)) == config


@pytest.mark.parametrize(
    "override", ["negatives=some", "negatives=-1", "resolution=4", "max_objects_per_query=0"]
)
def test_bad_values_are_rejected(override):
    with pytest.raises((ConfigError, ValueError)):
        load_config(DataConfig, None, [override])
