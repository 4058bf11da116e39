"""The trainer on OpenAI tool-calling rows: it trains, keeps the tool format with every saved model,
and samples the rows' prompts with their tools offered."""

import json

from cli.sample_data import TOOLS, tool_examples, write_jsonl
from lmtune.metrics_log import MetricsLog
from workers.models.tool_format import FALLBACK, TOOL_FORMAT_FILE, ToolFormat
from workers.training.loop import train


def test_tool_rows_train_and_the_run_keeps_their_format(make_spec, tmp_path):
    rows = write_jsonl(tool_examples(10, seed=3), tmp_path / "tools.jsonl")
    run = tmp_path / "run"
    result = train(
        make_spec(rows, epochs=1, batch_size=5, sample_prompts=None, sample_max_tokens=4, max_seq_length=1024), run
    )
    metrics = MetricsLog(run / "metrics.jsonl").read()
    assert [row["step"] for row in metrics] == [1, 2] and all(row["train_loss"] > 0 for row in metrics)

    checkpoint = run / "checkpoints" / "step-000002"
    for folder in (checkpoint, result.final_dir):
        assert ToolFormat.load(folder) == FALLBACK  # the tiny model's ChatML template renders no tools
    assert TOOL_FORMAT_FILE in [f["path"] for f in json.loads((checkpoint / "manifest.json").read_text())["files"]]

    [sample_set] = MetricsLog(run / "samples.jsonl").read()
    first = json.loads(rows.read_text().splitlines()[0])
    sample = sample_set["samples"][0]
    assert sample["tools"] == TOOLS and sample["prompt"] == [
        {"role": "user", "content": first["messages"][0]["content"]}
    ]
