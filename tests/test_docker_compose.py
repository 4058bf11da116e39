"""docker-compose.yml parses, and every lmtune command it runs exists in the CLI with those options."""

import re
from pathlib import Path

import click
import yaml

from cli.main import main

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_compose_file_parses_with_the_expected_services():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert {"redis", "postgres", "api", "worker", "models", "webhooks", "prometheus", "flower"} <= set(
        compose["services"]
    )
    worker = compose["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert all("healthcheck" in compose["services"][name] for name in ("redis", "postgres", "api", "worker", "models"))
    # the API, the worker and the model server share one data folder
    assert (
        compose["services"]["api"]["volumes"]
        == worker["volumes"]
        == compose["services"]["models"]["volumes"]
        == ["data:/data"]
    )
    # the API finds the model server where it listens, and shows it the secret it asks for
    assert compose["x-lmtune-env"]["LMTUNE_INFERENCE_URL"] == "http://models:8001"
    assert compose["services"]["models"]["command"][-1] == "8001" and "ports" not in compose["services"]["models"]
    assert (
        "X-Lmtune-Inference-Secret: $$LMTUNE_INFERENCE_SECRET"
        in compose["services"]["models"]["healthcheck"]["test"][1]
    )


def test_every_lmtune_command_in_compose_exists_in_the_cli():
    compose = yaml.safe_load(COMPOSE.read_text())
    commands = [s["command"] for s in compose["services"].values() if s.get("command", [None])[0] == "lmtune"]
    assert len(commands) == 4
    for command in commands:
        args = [re.sub(r"\$\{[A-Z_]+:-(\w+)\}", r"\1", arg) for arg in command[1:]]  # compose's ${VAR:-default}
        subcommand = main.get_command(click.Context(main), args[0])
        assert subcommand is not None, f"lmtune has no command {args[0]!r}"
        subcommand.make_context(args[0], args[1:])  # raises on an unknown option or a bad value


def test_no_password_is_written_in_compose_and_each_one_is_listed_in_env_example():
    text = COMPOSE.read_text()
    compose = yaml.safe_load(text)
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))  # compose refuses to start while one is unset
    assert {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "LMTUNE_METRICS_TOKEN", "LMTUNE_INFERENCE_SECRET"} <= required
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "${POSTGRES_PASSWORD:?" in compose["x-lmtune-env"]["DATABASE_URL"]
    listed = {
        line.split("=")[0]
        for line in (COMPOSE.parent / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required <= listed
    assert ".env" in (COMPOSE.parent / ".gitignore").read_text().splitlines()


def test_only_the_api_is_published_and_flower_wants_a_login():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published.pop("api") == ["8000:8000"]
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)  # loopback only
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_prometheus_scrapes_the_api_s_metrics_with_the_token_the_api_wants():
    compose = yaml.safe_load(COMPOSE.read_text())
    scrape = yaml.safe_load(compose["configs"]["prometheus"]["content"])["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["static_configs"][0]["targets"] == ["api:8000"]
    # the API reads the token from its environment; Prometheus sends the same variable
    assert scrape["authorization"]["credentials"] == compose["x-lmtune-env"]["LMTUNE_METRICS_TOKEN"]
    assert compose["services"]["prometheus"]["configs"][0]["target"] == "/etc/prometheus/prometheus.yml"
    # the deliverer runs from the API's image, without torch, on the services' database
    webhooks = compose["services"]["webhooks"]
    assert webhooks["build"]["target"] == "api" and webhooks["environment"] == compose["services"]["api"]["environment"]
