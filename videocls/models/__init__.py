"""Model zoo. Importing a family module registers its named configurations."""

from videocls.models import inception_i3d, mvit, resnet3d, slowfast, timesformer, videomae, x3d  # noqa: F401  (register the families)
from videocls.models.registry import ModelConfig, create_model, get_model_config, list_models, register_model

__all__ = ["ModelConfig", "create_model", "get_model_config", "list_models", "register_model"]
