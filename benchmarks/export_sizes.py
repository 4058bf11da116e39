"""Size and time of GGUF exports (workers/models/gguf_export.py), side by side.

For each model and quantization, one export in a fresh process (so its peak memory is its own):
seconds, the file's size, the size against the safetensors it came from, and the process's peak
resident memory. The writer reads and writes one tensor at a time, so the peak stays near the
interpreter plus torch plus the largest tensor, not the model.

    python -m benchmarks.export_sizes            # the tiny model and SmolLM2-135M-Instruct
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ONE_EXPORT = """
import json, sys, time
from pathlib import Path
from benchmarks.process_memory import peak_rss_mb
from workers.models.gguf_export import write_gguf
source, target, quantization = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
write_gguf(source, target, quantization, "benchmark")
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": target.stat().st_size, "peak_mb": peak_rss_mb()}))
"""


def export_once(source: Path, target: Path, quantization: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", ONE_EXPORT, str(source), str(target), quantization],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def models(scratch: Path) -> dict[str, Path]:
    from workers.models.gguf_import import smollm2_folder
    from workers.models.tiny_model import make_tiny_model

    return {"lmtune-tiny": make_tiny_model(scratch / "tiny"), "SmolLM2-135M-Instruct": smollm2_folder()}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        rows = []
        for name, folder in models(scratch).items():
            weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
            for quantization in ("f16", "q8_0"):
                figures = export_once(folder, scratch / f"{name}-{quantization}.gguf", quantization)
                rows.append((name, quantization, weights, figures))
                (scratch / f"{name}-{quantization}.gguf").unlink()
    print("| model | type | seconds | file | vs safetensors (fp32) | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, quantization, weights, f in rows:
        print(
            f"| {name} | {quantization} | {f['seconds']:.1f} | {f['bytes'] / 1e6:,.1f} MB "
            f"| {f['bytes'] / weights:.2f}x | {f['peak_mb']:,.0f} MB |"
        )


if __name__ == "__main__":
    main()
