"""bfm: released brain foundation model checkpoints in PyTorch.

    model = bfm.BrainModel.from_pretrained("ckpt/")           # model.safetensors + config.json
    head = bfm.TaskHead.from_pretrained("ckpt/")              # bfm finetune: task_head.safetensors + task.json

model.py is the spec's model written out (MODEL_SPEC.md, "The brain model, exactly (v1)"); task_head.py the head of
`bfm finetune`.
"""
from .model import BrainModel, load_checkpoint, read_safetensors, save_checkpoint, write_safetensors
from .task_head import TaskHead

__all__ = ["BrainModel", "TaskHead", "load_checkpoint", "read_safetensors", "save_checkpoint", "write_safetensors"]
