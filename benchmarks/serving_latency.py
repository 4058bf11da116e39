"""The model server's first-token latency: a model's first request (it loads) beside later ones
(already loaded), through the whole HTTP path the API uses (`POST /generate`, streamed), and the
generation rate after the first token.

    python benchmarks/serving_latency.py                 # the tiny model
    python benchmarks/serving_latency.py --model DIR     # any Hugging Face folder, e.g. SmolLM2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from workers.models.tiny_model import make_tiny_model
from workers.ports import free_port
from workers.serving.engine import ModelCache
from workers.serving.server import create_serving_app

PROMPT = [{"role": "user", "content": "Name three colours."}]


def timed_request(url: str, source: str, max_tokens: int) -> tuple[float, float, int, float]:
    """(seconds to the first text, seconds to the end, tokens, load seconds the server reported)."""
    body = {"model": {"source": source}, "messages": PROMPT, "max_tokens": max_tokens}
    started, first, tokens, load = time.monotonic(), None, 0, 0.0
    with httpx.stream("POST", f"{url}/generate", json=body, timeout=None) as response:
        for line in response.iter_lines():
            event = json.loads(line)
            if event["event"] == "start":
                load = event["load_seconds"]
            elif event["event"] == "text" and first is None:
                first = time.monotonic() - started
            elif event["event"] == "finish":
                tokens = event["completion_tokens"]
    return first or 0.0, time.monotonic() - started, tokens, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a Hugging Face model folder; default: a tiny random model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    source = args.model or str(make_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))

    port = free_port()
    app = create_serving_app(ModelCache(max_models=1, max_bytes=8 << 30))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"

    cold = timed_request(url, source, args.max_tokens)
    warm = [timed_request(url, source, args.max_tokens) for _ in range(args.repeats)]
    server.should_exit = True

    print(f"model: {source}")
    print(f"{'':28}{'first request (loads)':>24}{'loaded (median of ' + str(args.repeats) + ')':>24}")
    print(f"{'load seconds (reported)':28}{cold[3]:>24.3f}{statistics.median(w[3] for w in warm):>24.3f}")
    print(f"{'first token, seconds':28}{cold[0]:>24.3f}{statistics.median(w[0] for w in warm):>24.3f}")
    rates = [(w[2] - 1) / max(w[1] - w[0], 1e-9) for w in warm]
    print(f"{'tokens per second after it':28}{'':>24}{statistics.median(rates):>24.1f}")


if __name__ == "__main__":
    main()
