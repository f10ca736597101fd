"""Mixed precision for ``trainer.precision``, with a guard around a oneDNN bf16 conv3d bug on CPU.

The bug (PyTorch 2.14 / oneDNN on AVX-512 CPUs with ``avx512_bf16``; AVX2 kernels are not
affected, ``ONEDNN_MAX_CPU_ISA=AVX2`` hides it): the *weight* gradient of a bf16 ``conv3d`` is
sometimes NaN (data-dependent, not every call) when the input is shorter in time than the
temporal kernel, so every output frame reads zero padding. The inputs, the output and the
output gradient are finite, the input gradient is fine, and fp32 is fine. Minimal
reproduction (report upstream with ``python -m torch.utils.collect_env``)::

    import torch, torch.nn.functional as F
    torch.manual_seed(0)
    for _ in range(5):
        x = torch.randn(4, 32, 2, 8, 8, dtype=torch.bfloat16)
        w = torch.randn(16, 32, 3, 1, 1, dtype=torch.bfloat16, requires_grad=True)
        y = F.conv3d(x, w, None, 1, (1, 0, 0))
        y.backward(torch.randn_like(y))
        print(torch.isnan(w.grad).any().item())  # True on an AVX-512 bf16 CPU, some calls

Probed on an AMD EPYC (AVX-512 with bf16): T=1 with kernel 2 (padding 1), T=2 with kernel 3
(padding 1), T=3 and T=4 with kernel 5 (padding 2) fail; T >= kernel never did. In a 3D ResNet
this is a late stage of a short clip (a 4-frame tiny model has T=2 at ``res4``); one NaN
gradient would otherwise poison the step (see ``Trainer._optimizer_step``, which also skips
steps whose gradient norm is not finite).

Workaround: under CPU bf16 autocast, a ``conv3d`` whose input is smaller than its (dilated)
kernel in any of the three dimensions runs in fp32 and its output is cast back to bf16. Such
layers are tiny (the input is smaller than a kernel), so the cost is nil, and the layers of
full-size models (8+ frames, 7+ pixels at the last stage) keep running in bf16.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch.overrides import TorchFunctionMode

PRECISIONS = ("32", "bf16", "16")


def _pick(args: tuple, kwargs: dict, index: int, name: str, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * 3


def conv3d_input_smaller_than_kernel(args: tuple, kwargs: dict) -> bool:
    """Whether a ``conv3d(input, weight, bias, stride, padding, dilation, groups)`` call has an
    input extent smaller than the dilated kernel in some dimension (the failing configurations)."""
    x, weight = _pick(args, kwargs, 0, "input", None), _pick(args, kwargs, 1, "weight", None)
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) or x.dim() < 4:
        return False
    dilation = _triple(_pick(args, kwargs, 5, "dilation", 1))
    kernel = [d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[-3:])]
    return any(size < k for size, k in zip(x.shape[-3:], kernel))


def _fp32(value):
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


class Fp32ShortConv3d(TorchFunctionMode):
    """Run the ``conv3d`` calls that hit the CPU bf16 weight-gradient bug in fp32 (module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv3d and conv3d_input_smaller_than_kernel(args, kwargs):
            out_dtype = torch.get_autocast_dtype("cpu")
            args = tuple(_fp32(a) for a in args)
            kwargs = {k: _fp32(v) for k, v in kwargs.items()}
            with torch.autocast("cpu", enabled=False):
                return func(*args, **kwargs).to(out_dtype)
        return func(*args, **kwargs)


def autocast(device: torch.device, precision: str):
    """bf16 / fp16 autocast context for ``trainer.precision``; ``32`` is full precision.

    On CPU, bf16 also routes the convolutions that trigger the oneDNN bug above through fp32.
    """
    precision = str(precision)
    if precision == "32":
        return nullcontext()
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    context = torch.autocast(device_type=device.type, dtype=dtype)
    if device.type != "cpu" or dtype != torch.bfloat16:
        return context
    return _cpu_bf16(context)


@contextmanager
def _cpu_bf16(context):
    with context, Fp32ShortConv3d():
        yield
