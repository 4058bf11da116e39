"""The API and the shared domain never import torch: the API server stays light and starts fast."""

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_lmtune_and_service_modules_import_without_torch():
    modules = [m.name for package in ("lmtune", "service") for m in pkgutil.walk_packages([str(ROOT / package)], f"{package}.")]
    modules = [m for m in modules if ".migrations" not in m]  # Alembic loads those itself
    assert "service.app" in modules and "lmtune.cli" in modules
    probe = f"import sys; import {', '.join(modules)}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
