"""The live view of a job, rendered as the terminal would show it."""

import time

from rich.console import Console

from cli.terminal_views import FollowView


def job(**changes) -> dict:
    base = {
        "id": "ftjob-1",
        "status": "running",
        "model": "lmtune-tiny",
        "progress": {"step": 3, "total_steps": 20},
        "metrics": {"train_loss": 4.5},
        "estimated_finish": None,
        "queue_position": None,
    }
    return {**base, **changes}


def screen(view: FollowView, width: int = 100) -> str:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(view)
    return console.export_text()


def event(message: str, type: str = "message", data: dict | None = None, level: str = "info") -> dict:
    return {"id": f"ftevent-{message}", "created_at": 0, "level": level, "message": message, "type": type, "data": data}


def test_the_view_shows_step_losses_eta_and_the_latest_messages():
    view = FollowView(job(estimated_finish=int(time.time()) + 95))
    view.add_event(event("Fine-tuning job started (attempt 1)"))
    view.add_event(
        event(
            "Step 7/20: training loss=3.2500",
            "metrics",
            {"step": 7, "total_steps": 20, "train_loss": 3.25, "valid_loss": 3.5},
        )
    )
    view.add_event(event("Checkpoint created at step 5"))
    lines = screen(view).splitlines()
    assert lines[0].split() == ["ftjob-1", "running", "lmtune-tiny"]
    assert "step 7/20  loss 3.2500  valid 3.5000  ETA 0:01:3" in lines[1]  # 94 or 95 s left
    assert [line.split("  ", 1)[1] for line in lines[2:4]] == [
        "Fine-tuning job started (attempt 1)",
        "Checkpoint created at step 5",
    ]


def test_a_reinforcement_job_shows_its_reward_with_its_spread_the_kl_and_the_validation_reward():
    view = FollowView(job())
    rl = {"total_steps": 20, "train_loss": 0.01, "train_reward_mean": 0.4567, "train_reward_std": 0.2, "train_kl": 0.0}
    view.add_event(event("Step 8/20", "metrics", {"step": 8, **rl, "valid_reward_mean": 0.5}))
    assert "step 8/20  loss 0.0100  reward 0.457 ± 0.200  KL 0  valid reward 0.500" in screen(view, 140).splitlines()[1]
    # the next step: its own reward and KL; the validation reward (every eval_interval steps) stays
    view.add_event(event("Step 9/20", "metrics", {**rl, "step": 9, "train_reward_mean": 0.61, "train_kl": 0.00123}))
    assert (
        "step 9/20  loss 0.0100  reward 0.610 ± 0.200  KL 0.00123  valid reward 0.500"
        in screen(view, 140).splitlines()[1]
    )
    # a job object read before that event does not take the view back to step 8's values
    view.update_job(job(progress={"step": 8, "total_steps": 20}, metrics={"step": 8, **rl}))
    assert "step 9/20  loss 0.0100  reward 0.610" in screen(view).splitlines()[1]


def test_a_queued_job_shows_its_place_and_no_eta():
    view = FollowView(job(status="queued", queue_position=2, progress={"step": 0, "total_steps": None}, metrics=None))
    lines = screen(view).splitlines()
    assert lines[0].split()[1:3] == ["queued", "(#2)"]
    assert lines[1].strip().endswith("step 0/?")


def test_only_the_newest_messages_are_kept():
    view = FollowView(job())
    for number in range(10):
        view.add_event(event(f"message {number}"))
    assert [line.split("  ", 1)[1] for line in screen(view).splitlines()[2:]] == [f"message {n}" for n in range(4, 10)]
