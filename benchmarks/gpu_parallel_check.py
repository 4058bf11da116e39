"""The parallel and quantised paths of the trainer, each run as a worker runs it
(`python -m workers.training`), on a small random Llama-style model built here (no internet):

1. DDP parity: one rank of the launcher (a process group of one: NCCL on a GPU, gloo on the CPU,
   wrapped in DistributedDataParallel) against a plain single-process run: the same per-step losses.
2. FSDP parity: `training.parallelism: fsdp` (FSDP2 through Accelerate; one NCCL process on one GPU,
   two gloo processes on the CPU) against the plain run; its final/ loads with from_pretrained and
   its manifests list no sharded state.
3. QLoRA: `training.lora.quantize: 4bit` trains (NF4 base, bitsandbytes), and its merged final/ is a
   plain model whose loss on the training rows is the trained model's. Without CUDA or bitsandbytes
   the trainer must refuse it with `quantization_unavailable`, which is checked instead.
4. A DPO step: tokens per second of preference training.

Prints one line per check with its figures; exits 1 if any check fails.

    python -m benchmarks.gpu_parallel_check [--hidden-size 256 --layers 4 --steps 8]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from cli.sample_data import chat_examples, preference_examples, write_jsonl  # noqa: E402
from lmtune.layout import RunLayout, complete_checkpoints, read_manifest  # noqa: E402
from lmtune.metrics_log import MetricsLog  # noqa: E402
from workers.models.tiny_model import make_tiny_model  # noqa: E402
from workers.training.errors import EXIT_PAUSED  # noqa: E402
from workers.training.launcher import launch  # noqa: E402

CUDA = torch.cuda.is_available()
TOLERANCE = 1e-4 if not CUDA else 2e-3  # bf16 on a GPU: reductions in another order round differently


class Check:
    def __init__(self, work: Path, model: Path, steps: int, batch_size: int):
        self.work, self.model, self.steps, self.batch_size = work, model, steps, batch_size
        self.failed: list[str] = []
        self.hyperparameters = {"n_epochs": 1, "batch_size": batch_size}
        write_jsonl(chat_examples(steps * batch_size, seed=1, median_words=60, spread=0.5), work / "chat.jsonl")
        write_jsonl(preference_examples(steps * 4, seed=2, median_words=60, spread=0.5), work / "pairs.jsonl")

    def spec(self, name: str, rows: str = "chat.jsonl", method: dict | None = None, **training) -> Path:
        spec = {
            "model": str(self.model),
            "training_file": str(self.work / rows),
            "training": {
                "learning_rate": 1e-3,
                "mixed_precision": "bf16" if CUDA else "no",
                "shuffle": False,
                "max_seq_length": 1024,
                "checkpoint_every_steps": max(1, self.steps // 2),
                "sample_prompts": [],
                **training,
            },
            "method": method or {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}},
        }
        path = self.work / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    def run(self, name: str, spec: Path, processes: int = 1, as_rank: bool = False) -> tuple[int, Path]:
        """The trainer as a worker starts it; `as_rank`: through the launcher even for one process."""
        output = self.work / name
        command = [sys.executable, "-m", "workers.training", str(spec), "--output", str(output)]
        if as_rank:
            code = launch(command, processes, paused_status=EXIT_PAUSED, use_cpu=not CUDA)
        else:
            code = subprocess.run([*command, "--num-processes", str(processes)]).returncode
        return code, output

    def expect(self, what: str, ok: bool, figures: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'} {what}: {figures}", flush=True)
        if not ok:
            self.failed.append(what)


def losses(output: Path) -> list[float]:
    return [row["train_loss"] for row in MetricsLog(RunLayout(output).metrics).read()]


def _speed(output: Path, code: int) -> str:
    """Tokens per second at a run's last step, as the trainer measured it."""
    return f"{MetricsLog(RunLayout(output).metrics).read()[-1]['tokens_per_second']:,.0f}" if code == 0 else "-"


def largest_difference(a: list[float], b: list[float]) -> float:
    return (
        max((abs(x - y) for x, y in zip(a, b, strict=True)), default=float("inf")) if len(a) == len(b) else float("inf")
    )


def ddp_and_fsdp(check: Check) -> None:
    code, plain = check.run("plain", check.spec("plain"))
    reference = losses(plain) if code == 0 else []
    check.expect("plain run", code == 0, f"{len(reference)} steps, {_speed(plain, code)} tokens/s")

    code, ddp = check.run("ddp", check.spec("ddp"), as_rank=True)
    gap = largest_difference(losses(ddp), reference) if code == 0 else float("inf")
    backend = "NCCL" if CUDA else "gloo"
    # on a GPU a process group of one (NCCL, DistributedDataParallel); on the CPU Accelerate makes none
    check.expect(f"a launcher rank, 1 {backend} process", gap <= TOLERANCE, f"largest loss difference {gap:.2e}")

    processes = 1 if CUDA else 2  # NCCL takes one process per GPU
    code, fsdp = check.run("fsdp", check.spec("fsdp", parallelism="fsdp"), processes)
    gap = largest_difference(losses(fsdp), reference) if code == 0 else float("inf")
    published = [path for _, path in complete_checkpoints(fsdp / "checkpoints")] + [fsdp / "final"]
    private = [p for folder in published if folder.exists() for p in read_manifest(folder) if "training_state/" in p]
    loads = code == 0 and _loads(fsdp / "final")
    check.expect(
        f"FSDP2, {processes} {backend} process(es)",
        gap <= TOLERANCE and loads and not private,
        f"largest loss difference {gap:.2e}, {_speed(fsdp, code)} tokens/s, "
        f"final/ loads: {loads}, sharded files listed: {len(private)}",
    )


def qlora(check: Check) -> None:
    spec = check.spec("qlora", lora={"r": 16, "quantize": "4bit"}, learning_rate=2e-3)
    usable = CUDA and _has("bitsandbytes")
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    code, run = check.run("qlora", spec)
    if not usable:
        error = json.loads((run / "error.json").read_text()) if (run / "error.json").exists() else {}
        check.expect(
            "QLoRA refused here (no CUDA or no bitsandbytes)",
            code == 1 and error.get("code") == "quantization_unavailable",
            error.get("message", f"exit status {code}"),
        )
        return
    trained = losses(run) or [float("nan")]
    merged_loss = _loss_of(run / "final", check.work / "chat.jsonl") if code == 0 else float("nan")
    config = json.loads((run / "final" / "config.json").read_text()) if code == 0 else {}
    check.expect(
        "QLoRA (NF4 base) train and merge",
        code == 0 and trained[-1] < trained[0] and "quantization_config" not in config,
        f"loss {trained[0]:.3f} -> {trained[-1]:.3f}, {_speed(run, code)} tokens/s; merged final/ "
        f"(de-quantised base + adapter) loss on the training rows {merged_loss:.3f}",
    )


def dpo(check: Check) -> None:
    method = {"type": "dpo", "dpo": {"hyperparameters": check.hyperparameters}}
    code, run = check.run("dpo", check.spec("dpo", rows="pairs.jsonl", method=method))
    check.expect("DPO steps", code == 0, f"{_speed(run, code)} tokens/s")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _loads(folder: Path) -> bool:
    from transformers import AutoModelForCausalLM

    try:
        AutoModelForCausalLM.from_pretrained(folder)
    except (OSError, ValueError):
        return False
    return True


def _loss_of(folder: Path, rows: Path) -> float:
    """The mean token loss of a plain model in folder on the text of the rows (a check of the merge)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    total = count = 0.0
    with torch.no_grad():
        for line in rows.read_text().splitlines()[:32]:
            text = " ".join(m["content"] for m in json.loads(line)["messages"])
            ids = tokenizer(text, return_tensors="pt").input_ids[:, :1024]
            out = model(input_ids=ids, labels=ids)
            total += out.loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lmtune-parallel-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    model = make_tiny_model(
        work / "model",
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=max(1, args.hidden_size // 64),
        intermediate_size=args.hidden_size * 3,
    )
    check = Check(work, model, args.steps, args.batch_size)
    print(f"device: {torch.cuda.get_device_name() if CUDA else 'cpu'}; loss tolerance {TOLERANCE:g}", flush=True)
    for part in (ddp_and_fsdp, qlora, dpo):
        part(check)
    if check.failed:
        print(f"FAILED: {', '.join(check.failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
