"""The one place that patches third-party incompatibilities; import it before pytorchvideo.

pytorchvideo 0.1.5 (its last release) imports ``torchvision.transforms.functional_tensor``,
which torchvision renamed to ``_functional_tensor``. Aliasing the old name keeps the
library importable without forking it.
"""

import sys

import torchvision.transforms._functional_tensor as _functional_tensor

sys.modules.setdefault("torchvision.transforms.functional_tensor", _functional_tensor)
