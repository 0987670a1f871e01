"""Networks (TiT, small U-Net) and the model registry."""

from .registry import MODELS, ModelSpec, build_model
from .tit import TIT_CONFIGS, TiT
from .unet import UNet

__all__ = ["MODELS", "ModelSpec", "build_model", "TIT_CONFIGS", "TiT", "UNet"]
