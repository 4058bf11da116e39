"""How a run's processes share the model (`training.parallelism`): each holds a whole copy (DDP,
Accelerate's default) or a shard of the weights, gradients and optimizer state (FSDP2, through
Accelerate's FullyShardedDataParallelPlugin). docs/multi-gpu.md says when to use which.

Sharded runs checkpoint their training state as per-process shards (torch.distributed.checkpoint:
fast, no process holds the whole optimizer) and their model as one ordinary Hugging Face folder
gathered on the main process, which is what is published and served.
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, InitProcessGroupKwargs

from lmtune.spec import TrainingOptions
from workers.training.launcher import collective_timeout, started_as_rank


def make_accelerator(training: TrainingOptions, precision: str) -> Accelerator:
    fsdp = training.parallelism == "fsdp" and started_as_rank()
    plugin = _fsdp2_plugin() if fsdp else None
    accelerator = Accelerator(
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=precision,
        # a lost node or process fails the collectives after this time instead of hanging the others
        kwargs_handlers=[InitProcessGroupKwargs(timeout=collective_timeout())],
        fsdp_plugin=plugin,
    )
    if fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _shard_on_cpu(accelerator, plugin, precision)
    return accelerator


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def _fsdp2_plugin() -> FullyShardedDataParallelPlugin:
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",  # one unit per decoder layer (the model's _no_split_modules)
        reshard_after_forward=True,  # free each layer's gathered weights after use (ZeRO-3)
        state_dict_type="SHARDED_STATE_DICT",  # training state: each process writes its own shard
        cpu_ram_efficient_loading=False,  # every process loads the weights; then each keeps its shard
        activation_checkpointing=False,  # training.gradient_checkpointing does this, the same for DDP
    )


def _shard_on_cpu(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin, precision: str) -> None:
    """Accelerate takes FSDP only on accelerators (its state stays MULTI_CPU on gloo); torch's FSDP2
    runs on gloo too. Set its state as Accelerate does on a GPU, so that CPU runs (the tests) take
    the same code path as GPU runs: fully_shard in prepare, sharded save_state/load_state, gathered
    get_state_dict."""
    if precision != "no":
        plugin.set_mixed_precision(precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    # AcceleratorState copies the process's PartialState whenever it is built again: keep them alike
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
