"""Every shipped YAML file parses, and every preset is a valid job spec."""

from pathlib import Path

import pytest
import yaml

from lmtune.spec import load_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("preset", sorted((CONFIGS / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_is_a_valid_job_spec(preset):
    spec = load_spec(preset)
    assert spec.training_file.endswith(".jsonl")


@pytest.mark.parametrize("config", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_every_accelerate_config_loads_in_accelerate(config):
    from accelerate.commands.config.config_args import ClusterConfig

    loaded = ClusterConfig.from_yaml_file(config)  # refuses unknown types and fields
    assert loaded.distributed_type.value == yaml.safe_load(config.read_text())["distributed_type"]
    assert loaded.num_processes >= 1


def test_the_model_catalogue_loads_with_the_builtin_tiny_model():
    from lmtune.catalogue import load_catalogue

    catalogue = load_catalogue(CONFIGS / "models.yaml")
    assert catalogue["lmtune-tiny"].builtin == "tiny"
    assert all(entry.source or entry.builtin for entry in catalogue.values())


def test_every_setting_is_documented_for_deployment():
    from lmtune.settings import Settings, env_name

    documented = (CONFIGS.parent / "docs" / "deployment.md").read_text()
    missing = [env_name(field) for field in Settings.model_fields if f"`{env_name(field)}`" not in documented]
    assert not missing, f"add these to docs/deployment.md: {missing}"
