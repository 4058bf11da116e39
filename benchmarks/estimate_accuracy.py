"""How close `POST /v1/fine_tuning/jobs/estimate` comes to what jobs then take, from one run.

Starts `lmtune up` in a temporary data folder (the API, one CPU worker; the built-in tiny model),
runs one job to give the estimates a measured speed, then for jobs of several sizes asks for the
estimate, creates the job, waits for it and prints, side by side: the estimated and the measured
wall time (a worker's `started_at` to `finished_at`), and the estimated and the trained tokens.
The first line shows the estimate a first job gets (the documented first guess).

    python -m benchmarks.estimate_accuracy [--sizes 40,120,300] [--epochs 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

from benchmarks.service_load import Deployment
from cli.sample_data import chat_examples


def estimate(deployment: Deployment, body: dict) -> dict:
    response = deployment.http.post("/v1/fine_tuning/jobs/estimate", json=body)
    response.raise_for_status()
    return response.json()


def run(deployment: Deployment, examples: int, epochs: int, seed: int) -> tuple[dict, dict]:
    file_id = deployment.upload(chat_examples(examples, seed=seed, spread=0.6))
    body = {
        "model": "lmtune-tiny",
        "training_file": file_id,
        "hyperparameters": {"n_epochs": epochs, "batch_size": 4},
        "training": {"learning_rate": 2e-3, "sample_prompts": []},
    }
    guessed = estimate(deployment, body)
    job = deployment.http.post("/v1/fine_tuning/jobs", json=body).json()
    return guessed, deployment.wait(job["id"], {"succeeded"}, poll=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="40,120,300", help="examples per job, comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {platform.python_version()}; lmtune-tiny on a CPU worker")
    print(f"{'job':<28}{'steps':>7}{'est. s':>9}{'took s':>9}{'error':>8}{'est. tokens':>13}{'tokens':>9}  basis")
    with tempfile.TemporaryDirectory() as root:
        deployment = Deployment(Path(root))
        try:
            sizes = [int(size) for size in args.sizes.split(",")]
            for label, examples, seed in [("first job (no history)", sizes[0], 100)] + [
                (f"{size} examples x {args.epochs} epochs", size, n) for n, size in enumerate(sizes)
            ]:
                guessed, done = run(deployment, examples, args.epochs, seed)
                took = _wall(deployment, done["id"])
                est = guessed["estimated_seconds"]
                error = f"{(est - took) / took:+.0%}" if est is not None else "n/a"
                print(
                    f"{label:<28}{guessed['total_steps']:>7}{est if est is not None else 'n/a':>9}{took:>9.1f}{error:>8}"
                    f"{guessed['tokens']['trained']:>13,}{done['trained_tokens']:>9,}  {guessed['estimated_seconds_basis'][:60]}"
                )
        finally:
            deployment.stop()


def _wall(deployment: Deployment, job_id: str) -> float:
    """From the worker's claim (started_at) to the recorded end, as the estimate means it."""
    from lmtune.store.database import open_database
    from lmtune.store.jobs import get_job

    db = open_database(f"sqlite:///{deployment.root / 'data' / 'lmtune.db'}")
    try:
        job = get_job(db, job_id)
        return float(job.finished_at - job.started_at)
    finally:
        db.engine.dispose()


if __name__ == "__main__":
    main()
