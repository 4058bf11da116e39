"""The lock (requirements/, made by scripts/lock) is in step with pyproject.toml: every dependency of
each extra is pinned in that extra's lock at a version it allows, with hashes, and the locks agree."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
EXTRAS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
MACHINES = [
    {
        "sys_platform": "linux",
        "platform_machine": machine,
        "python_full_version": version,
        "python_version": version[:4],
    }
    for machine in ("x86_64", "aarch64")
    for version in ("3.11.7", "3.12.3", "3.13.1")
]


def pins(path: Path, machine: dict) -> dict[str, str]:
    """name -> version of each requirement in a lock file whose marker holds on `machine`."""
    text = path.read_text().replace("\\\n", " ")
    pinned = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        requirement = Requirement(re.sub(r"\s+--hash=\S+", "", line).strip())
        if requirement.marker is None or requirement.marker.evaluate(machine):
            [specifier] = requirement.specifier
            pinned[canonicalize_name(requirement.name)] = specifier.version
    return pinned


def wanted(extra: str) -> list[Requirement]:
    """The base dependencies and those of `extra`, with lmtune's own extras (lmtune[api,...]) unfolded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found, todo, seen = [], [extra], set()
    for requirement in map(Requirement, project["dependencies"]):
        found.append(requirement)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in map(Requirement, project["optional-dependencies"][name]):
            if requirement.name == "lmtune":
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: f"{m['platform_machine']}-py{m['python_version']}")
@pytest.mark.parametrize("extra", EXTRAS)
def test_every_dependency_of_an_extra_is_pinned_in_its_lock_at_an_allowed_version(extra, machine):
    locked = pins(LOCKS / f"{extra}.txt", machine) | pins(LOCKS / "torch.txt", machine)
    for requirement in wanted(extra):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/{extra}.txt: run scripts/lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements/{extra}.txt pins {name}=={locked[name]}, outside {requirement}: run scripts/lock"
        )


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: f"{m['platform_machine']}-py{m['python_version']}")
def test_the_locks_agree_so_that_any_of_them_install_together(machine):
    versions: dict[str, set[str]] = {}
    for extra in EXTRAS:
        for name, version in pins(LOCKS / f"{extra}.txt", machine).items():
            versions.setdefault(name, set()).add(version)
    assert {name: found for name, found in versions.items() if len(found) > 1} == {}


def test_every_locked_file_has_a_hash_and_torch_is_its_cpu_build():
    for extra in EXTRAS:
        entries = re.split(r"\n(?=[A-Za-z0-9])", (LOCKS / f"{extra}.txt").read_text())
        for entry in entries:
            if not entry.startswith("#"):
                assert "--hash=sha256:" in entry, entry.splitlines()[0]
        # torch is installed apart, from requirements/torch.txt
        assert not any(entry.startswith("torch==") for entry in entries), extra
    torch = {m["platform_machine"]: pins(LOCKS / "torch.txt", m)["torch"] for m in MACHINES}
    assert torch["x86_64"].endswith("+cpu")
    # PyPI's aarch64 torch is the CPU build up to 2.10 (from 2.11 on it depends on CUDA's packages)
    assert tuple(map(int, torch["aarch64"].split("."))) <= (2, 10, 0)
