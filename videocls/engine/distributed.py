"""torchrun environment: one process per device, NCCL on GPU, gloo on CPU."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """The device ``trainer.device`` names: ``auto``, ``cpu``, ``cuda`` (this rank's GPU,
    ``cuda:LOCAL_RANK``) or ``cuda:N`` (GPU N, one process per node). Anything else, or a CUDA
    device that is not there, raises ValueError: training must never fall back to the CPU silently."""
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"trainer.device={device!r}: use cuda, cuda:N, cpu or auto")
    if not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device}: no CUDA GPU is visible to PyTorch "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                         "use trainer.device=cpu")
    if device == "cuda":
        index = local_rank
    else:
        index = int(device[5:])
        if local_world_size > 1:
            raise ValueError(f"trainer.device={device} with {local_world_size} processes on this node: "
                             "use trainer.device=cuda (each torchrun rank takes cuda:LOCAL_RANK) and "
                             "choose the GPUs with CUDA_VISIBLE_DEVICES")
    if index >= torch.cuda.device_count():
        raise ValueError(f"trainer.device={device}: GPU {index} does not exist "
                         f"({torch.cuda.device_count()} visible)")
    return torch.device("cuda", index)


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistEnv:
    """Read RANK/LOCAL_RANK/WORLD_SIZE (set by torchrun), pick the device (``resolve_device``)
    and join the process group."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dev = resolve_device(device, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    else:
        # Denormal floats (tiny gradients, zero-initialised BN branches) make CPU kernels
        # ten times slower; flushing them to zero changes nothing a model can learn from.
        torch.set_flush_denormal(True)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistEnv(rank, local_rank, world_size, dev)


def share_cpu_cores(env: DistEnv, num_workers: int) -> int:
    """On CPU, give this rank's intra-op threads only the cores its loader workers and the other
    ranks on this node leave free, and return that count.

    Decoding workers and a model that also wants every core oversubscribe the machine: on 2
    cores with 2 workers one thread trains the demo about 15% faster than two.
    """
    if env.device.type != "cpu":
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    threads = max(1, cores // local_ranks - num_workers)
    torch.set_num_threads(threads)
    return threads


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (a one-element list without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (unchanged without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (e.g. a preemption signal)."""
    if not dist.is_initialized():
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
