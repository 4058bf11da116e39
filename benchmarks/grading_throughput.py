"""Grading throughput, side by side: python graders through the sandbox (a batch in one child, as an
eval run grades; one child per call, as /v1/fine_tuning/alpha/graders/run does), string_check and
each text_similarity metric (cosine on the packaged all-MiniLM-L6-v2, when installed).

    python -m benchmarks.grading_throughput [--items 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from pydantic import TypeAdapter

from lmtune.graders import SandboxLimits, Tools, grade_batch, sample_namespace
from lmtune.graders.schema import Grader

WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house river".split()
PYTHON_SOURCE = """
from rapidfuzz import fuzz

def grade(sample, item):
    return fuzz.ratio(sample["output_text"], item["reference"]) / 100
"""


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))


def graders() -> dict[str, dict]:
    text = {"input": "{{sample.output_text}}", "reference": "{{item.reference}}"}
    found = {"string_check (eq)": {"type": "string_check", "name": "s", "operation": "eq", **text}}
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_l", "cosine"):
        found[f"text_similarity {metric}"] = {
            "type": "text_similarity",
            "name": "t",
            "evaluation_metric": metric,
            **text,
        }
    found["python, one child per batch"] = {"type": "python", "name": "p", "source": PYTHON_SOURCE}
    return found


def embedder():
    try:
        from workers.models.embedding import local_embedder
    except ImportError:  # no torch here
        return None
    return local_embedder()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--calls", type=int, default=20, help="single-sample python calls (graders/run)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    pairs = [(sample_namespace(sentence(rng)), {"reference": sentence(rng)}) for _ in range(args.items)]
    tools = Tools(embedder=embedder(), sandbox=SandboxLimits())
    adapter = TypeAdapter(Grader)
    rows = []
    for name, spec in graders().items():
        if name.endswith("cosine") and tools.embedder is None:
            rows.append((name, None, "no embedding model installed"))
            continue
        grader = adapter.validate_python(spec)
        grade_batch(grader, pairs[:4], tools)  # libraries imported, model loaded
        rates = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            grade_batch(grader, pairs, tools)
            rates.append(len(pairs) / (time.perf_counter() - started))
        rows.append((name, statistics.median(rates), f"{args.items} items a batch"))
    grader = adapter.validate_python(graders()["python, one child per batch"])
    rates = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for pair in pairs[: args.calls]:
            grade_batch(grader, [pair], tools)
        rates.append(args.calls / (time.perf_counter() - started))
    rows.append(("python, one child per call (graders/run)", statistics.median(rates), f"{args.calls} calls"))
    print(f"| grader | samples/s (median of {args.rounds}) | batch |")
    print("|---|---|---|")
    for name, rate, note in rows:
        print(f"| {name} | {'—' if rate is None else f'{rate:,.1f}'} | {note} |")


if __name__ == "__main__":
    main()
