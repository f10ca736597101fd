"""Types shared by every level of ``videocls.models``: the bottom of the package, importing
nothing from it, so the layers, the checkpoint readers, the families and the registry can all
name a state dict without importing one another (``StateDict`` was defined three times)."""

from __future__ import annotations

import torch

#: A flat ``{parameter or buffer name: tensor}`` mapping, as ``nn.Module.state_dict`` gives.
StateDict = dict[str, torch.Tensor]
