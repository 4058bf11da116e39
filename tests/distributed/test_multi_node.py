"""One job on two hosts: network namespaces made by the test (tests/distributed/hosts.py), a real
`lmtune worker` in each, a private Redis and PostgreSQL on the bridge between them, the data folder
shared (as docs/distributed.md requires). 2 nodes x 1 gloo process train one model with the
per-step losses and final weights of one process, as DDP and as FSDP (each node writing its shard
of every checkpoint); a node killed, or cut off, ends in one resumed run, each step once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from sqlalchemy import func, select
from transformers import AutoModelForCausalLM

from lmtune.layout import RunLayout, complete_checkpoints, read_manifest
from lmtune.store.models import Event, JobStatus
from tests.deployment import open_deployment
from tests.distributed.hosts import Hosts, can_make_hosts
from tests.faults.servers import PostgresServer, RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not can_make_hosts(), reason="network namespaces need root and iproute2"),
]

SETTINGS = {
    "LMTUNE_LEASE_SECONDS": "10",
    "LMTUNE_MAX_ATTEMPTS": "5",
    "LMTUNE_COLLECTIVE_TIMEOUT_SECONDS": "20",
    "LMTUNE_GANG_WAIT_SECONDS": "120",
}


class Gang:
    def __init__(self, deployment, hosts: Hosts):
        self.deployment, self.hosts = deployment, hosts
        self.workers: dict[int, subprocess.Popen] = {}

    def start_worker(self, node: int) -> subprocess.Popen:
        """A worker on host `node`: its address for the rendezvous, gloo on its only interface."""
        env = {
            **self.deployment.env,
            "LMTUNE_NODE_ADDRESS": self.hosts.node(node),
            "GLOO_SOCKET_IFNAME": self.hosts.interfaces[node],
        }
        log = (self.deployment.root / f"worker-node{node}-{len(self.deployment.processes)}.log").open("wb")
        command = self.hosts.inside(node, [sys.executable, "-m", "cli", "worker", "--gpus", "0"])
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.deployment.processes.append(process)
        self.workers[node] = process
        return process

    def node_of(self, job) -> int:
        """The host whose worker holds the job's lease (rank 0 of its gang)."""
        pid = int(job.lease_owner.rsplit(":", 1)[1])
        return next(node for node, worker in self.workers.items() if worker.pid == pid)

    def run(self, job_id: str) -> RunLayout:
        return RunLayout(self.deployment.settings.data_dir / "jobs" / job_id)

    def single_process_run(self, job_id: str, tmp_path) -> RunLayout:
        """The same job.json trained by one plain process (DDP's path, unsharded) on this host: the reference."""
        output = tmp_path / "single"
        spec = json.loads((self.deployment.settings.data_dir / "jobs" / job_id / "job.json").read_text())
        spec["training"]["parallelism"] = "ddp"
        (tmp_path / "single.json").write_text(json.dumps(spec))
        subprocess.run(
            [sys.executable, "-m", "workers.training", str(tmp_path / "single.json"), "--output", str(output)],
            env=self.deployment.env,
            check=True,
            capture_output=True,
        )
        return RunLayout(output)

    def check_each_step_once(self, job_id: str, tmp_path) -> None:
        job = self.deployment.job(job_id)
        assert job.status == JobStatus.SUCCEEDED, self.deployment.logs()
        losses = train_losses(self.run(job_id))
        assert [step for step, _ in losses] == list(range(1, job.total_steps + 1))
        with self.deployment.db.session() as session:
            events = session.scalar(select(func.count()).where(Event.job_id == job_id, Event.type == "metrics"))
        assert events == job.total_steps
        single = self.single_process_run(job_id, tmp_path)
        reference = train_losses(single)
        assert [step for step, _ in reference] == [step for step, _ in losses]
        for (step, gang_loss), (_, single_loss) in zip(losses, reference):
            assert gang_loss == pytest.approx(single_loss, abs=1e-4), f"step {step}"
        # what is published is ordinary Hugging Face weights, those one process trains
        published = AutoModelForCausalLM.from_pretrained(self.run(job_id).final)
        expected = AutoModelForCausalLM.from_pretrained(single.final)
        for (name, weight), (_, value) in zip(published.named_parameters(), expected.named_parameters(), strict=True):
            torch.testing.assert_close(weight, value, atol=1e-5, rtol=0, msg=name)

    def check_a_shard_from_each_node(self, job_id: str) -> None:
        """Each node wrote its shard of every checkpoint's training state into the shared run folder,
        which is kept to resume from and never listed for download."""
        checkpoints = complete_checkpoints(self.run(job_id).checkpoints)
        assert checkpoints
        for _, checkpoint in checkpoints:
            shards = checkpoint / "training_state" / "optimizer_0"
            assert sorted(path.name for path in shards.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
            assert not any(path.startswith("training_state/") for path in read_manifest(checkpoint))


@pytest.fixture
def gang(tmp_path):
    hosts = Hosts(2)
    hosts.up()
    redis, postgres = RedisServer(hosts.address), PostgresServer(hosts.address)
    try:
        redis.start()
        postgres.initialise()
        postgres.start()
        with open_deployment(tmp_path, postgres.url, redis_url=redis.url, **SETTINGS) as deployment:
            yield Gang(deployment, hosts)
    finally:
        redis.stop()
        postgres.remove()
        hosts.down()


def train_losses(run: RunLayout) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    return [(row["step"], row["train_loss"]) for row in rows if "train_loss" in row]


def ended(job) -> bool:
    return job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)


def job_past_its_first_checkpoint(gang: Gang, parallelism: str = "ddp"):
    """A 20-step job on both nodes, once it has trained 7 steps (a checkpoint every 5)."""
    gang.start_worker(0)
    gang.start_worker(1)
    job = gang.deployment.submit(examples=16, epochs=5, nodes=2, parallelism=parallelism)
    return gang.deployment.wait_for(job.id, lambda j: j.step >= 7, "step 7, past its first checkpoint")


def check_one_resumed_run(gang: Gang, job_id: str, tmp_path) -> None:
    done = gang.deployment.wait_for(job_id, ended, "its end")
    assert done.failures == 1, gang.deployment.logs()  # the one attempt the fault ended
    gang.check_each_step_once(job_id, tmp_path)


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_two_nodes_train_one_model_with_the_losses_of_one_process(gang, tmp_path, parallelism):
    gang.start_worker(0)
    gang.start_worker(1)
    job = gang.deployment.submit(examples=16, epochs=2, nodes=2, parallelism=parallelism)
    done = gang.deployment.wait_for(job.id, ended, "its end")
    assert done.attempt == 1  # one gang, formed once
    gang.check_each_step_once(job.id, tmp_path)
    if parallelism == "fsdp":
        gang.check_a_shard_from_each_node(job.id)


def test_the_node_of_rank_0_killed_mid_run_ends_in_one_resumed_run_each_step_once(gang, tmp_path):
    # sharded (FSDP): the new gang resumes from the shards both nodes wrote; DDP's resume is the next test's
    running = job_past_its_first_checkpoint(gang, "fsdp")
    # rank 0's node: the worker holding the lease, with the rendezvous and the main process
    node = gang.node_of(running)
    gang.workers[node].send_signal(signal.SIGKILL)  # its trainer dies with it
    # the other node's collective fails, its trainer exits; the lease lapses and the sweep queues the job
    gang.deployment.wait_for(running.id, lambda j: j.attempt >= 2 or ended(j), "the job back")
    gang.start_worker(node)  # the node comes back
    check_one_resumed_run(gang, running.id, tmp_path)
    gang.check_a_shard_from_each_node(running.id)


def test_a_node_cut_off_stops_the_gang_and_the_job_resumes_once_it_is_back(gang, tmp_path):
    running = job_past_its_first_checkpoint(gang)
    member = 1 - gang.node_of(running)
    gang.hosts.cut(member)
    # rank 0's collective times out (LMTUNE_COLLECTIVE_TIMEOUT_SECONDS) and its worker queues the job again
    gang.deployment.wait_for(running.id, lambda j: j.attempt >= 2 or ended(j), "the job back")
    gang.hosts.mend(member)
    check_one_resumed_run(gang, running.id, tmp_path)
