"""bfm: released brain foundation model checkpoints in PyTorch.

    model = bfm.BrainModel.from_pretrained("ckpt/")           # model.safetensors + config.json

model.py is the spec's model written out (MODEL_SPEC.md, "The brain model, exactly (v1)").
"""
from .model import BrainModel, load_checkpoint, read_safetensors, save_checkpoint, write_safetensors

__all__ = ["BrainModel", "load_checkpoint", "read_safetensors", "save_checkpoint", "write_safetensors"]
