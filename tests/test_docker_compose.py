"""docker-compose.yml parses, and every lmtune command it runs exists in the CLI with those options."""

import re
from pathlib import Path

import click
import yaml

from lmtune.cli import main

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_compose_file_parses_with_the_expected_services():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert {"redis", "postgres", "api", "worker", "flower"} <= set(compose["services"])
    worker = compose["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert all("healthcheck" in compose["services"][name] for name in ("redis", "postgres", "api", "worker"))
    # the API and the worker share one data folder
    assert compose["services"]["api"]["volumes"] == worker["volumes"] == ["data:/data"]


def test_every_lmtune_command_in_compose_exists_in_the_cli():
    compose = yaml.safe_load(COMPOSE.read_text())
    commands = [s["command"] for s in compose["services"].values() if s.get("command", [None])[0] == "lmtune"]
    assert len(commands) == 2
    for command in commands:
        args = [re.sub(r"\$\{[A-Z_]+:-(\w+)\}", r"\1", arg) for arg in command[1:]]  # compose's ${VAR:-default}
        subcommand = main.get_command(click.Context(main), args[0])
        assert subcommand is not None, f"lmtune has no command {args[0]!r}"
        subcommand.make_context(args[0], args[1:])  # raises on an unknown option or a bad value
