"""The layers hold: the import contracts in pyproject.toml are kept, and only the trainer, the model
server and the model code they share import torch at module level, so the API and the worker parent stay light and start fast."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept():
    # in its own process: import-linter reconfigures logging, silencing every logger already made
    done = subprocess.run(
        [Path(sys.executable).with_name("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_only_the_trainer_and_the_model_server_import_torch_at_module_level():
    packages = {"lmtune": "lmtune.", "service": "service.", "workers": "workers.", "cli": "cli."}
    modules = [
        m.name for package, prefix in packages.items() for m in pkgutil.walk_packages([str(ROOT / package)], prefix)
    ]
    # the trainer and the model server hold models; nothing else may pull torch in
    modules = [
        m
        for m in modules
        if ".migrations" not in m
        and not m.startswith(("workers.training", "workers.serving", "workers.models"))
        and m not in ("cli.__main__",)
    ]
    assert {"service.app", "cli.main", "workers.job_runner", "workers.celery_worker"} <= set(modules)
    probe = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
