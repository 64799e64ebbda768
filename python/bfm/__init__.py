"""bfm: released brain foundation model checkpoints in PyTorch (the spec's model, written out in model.py)."""
from .model import (BrainModel, load_checkpoint, read_safetensors, save_checkpoint, write_safetensors)

__all__ = ["BrainModel", "load_checkpoint", "read_safetensors", "save_checkpoint", "write_safetensors"]
