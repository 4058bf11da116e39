"""The layers install apart: the API's image and extra carry no torch; the worker's do."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "accelerate", "peft", "datasets"}


def names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in requirements}


def test_the_api_installs_without_torch_and_the_worker_with_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not (names(project["dependencies"]) | names(extras["api"])) & HEAVY
    assert HEAVY <= names(extras["worker"])


def test_compose_builds_the_api_from_the_image_without_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.M | re.S))
    assert "[api]" in stages["api"] and "torch" not in stages["api"] and "[worker,trackers]" in stages["worker"]
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    # the model server holds models (torch) and answers over HTTP
    assert "[api,worker]" in stages["models"] and services["models"]["build"]["target"] == "models"
