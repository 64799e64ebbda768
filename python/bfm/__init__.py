"""bfm: released brain foundation model checkpoints in PyTorch.

    model = bfm.BrainModel.from_pretrained("ckpt/")           # model.safetensors + config.json
    head = bfm.TaskHead.from_pretrained("ckpt/")              # bfm finetune: task_head.safetensors + task.json
    x = bfm.preprocess(series, "ckpt/", tr=2.0)               # [T, P] parcel means -> what bfm convert stores

model.py is the spec's model written out (MODEL_SPEC.md, "The brain model, exactly (v1)"); task_head.py the head of
`bfm finetune`; preprocess.py the per-run preprocessing of `bfm convert` (io/run_preprocess.cpp) in numpy.
"""
from .model import BrainModel, load_checkpoint, read_safetensors, save_checkpoint, write_safetensors
from .preprocess import preprocess, read_confounds
from .task_head import TaskHead

__all__ = ["BrainModel", "TaskHead", "load_checkpoint", "preprocess", "read_confounds", "read_safetensors",
           "save_checkpoint", "write_safetensors"]
