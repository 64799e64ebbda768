"""The task head of a `bfm finetune` checkpoint: a linear map from the model's `pooled` output to a task's outputs.

Files (docs/EVALUATION.md, "Full fine-tuning"; written by model/task_head.cpp): task_head.safetensors holds
task_head.weight [O, D] and task_head.bias [O] (float32); task.json holds format "bfm-task-head", the task, `outputs`
(O), `input` ("pooled"), the loss ("cross_entropy" for a class task, "mse_standardised" for an embedding task) and,
for the latter, `target_mean` and `target_scale` [O]: the head was trained on (value - target_mean) / target_scale,
so its raw output times target_scale plus target_mean is the prediction in the targets' own units.

    model = bfm.BrainModel.from_pretrained("ft/")
    head = bfm.TaskHead.from_pretrained("ft/")
    logits = head(model(x))          # or head(model(x)["pooled"]); [B, O]
"""
import json
import os

import torch

from .model import read_safetensors

FORMAT = "bfm-task-head"
LOSSES = ("cross_entropy", "mse_standardised")


class TaskHead(torch.nn.Module):
    """weight [O, D], bias [O]; forward(pooled [B, D]) -> logits [B, O] (class task) or predictions [B, O] in the
    targets' units (embedding task)."""

    def __init__(self, task, loss, weight, bias, target_mean=None, target_scale=None, input="pooled"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"task head {task!r}: loss {loss!r}, expected one of {LOSSES}")
        self.task, self.loss, self.input = task, loss, input
        self.classification = loss == "cross_entropy"
        self.weight = torch.nn.Parameter(torch.as_tensor(weight))
        self.bias = torch.nn.Parameter(torch.as_tensor(bias))
        O = self.weight.shape[0]
        if self.weight.dim() != 2 or tuple(self.bias.shape) != (O,):
            raise ValueError(f"task head {task!r}: weight {tuple(self.weight.shape)} and bias "
                             f"{tuple(self.bias.shape)} are not [O, D] and [O]")
        if not self.classification and (target_mean is None or target_scale is None
                                         or len(target_mean) != O or len(target_scale) != O):
            raise ValueError(f"task head {task!r}: target_mean and target_scale need {O} values each")
        # Buffers so that .to(device) moves them with the weights; a class head keeps none (0 and 1 would do nothing).
        self.register_buffer("target_mean", None if self.classification else torch.as_tensor(target_mean))
        self.register_buffer("target_scale", None if self.classification else torch.as_tensor(target_scale))

    @property
    def outputs(self):
        return self.weight.shape[0]

    @classmethod
    def from_pretrained(cls, folder, device=None, dtype=torch.float32):
        """The head of a `bfm finetune` output folder (task.json + task_head.safetensors), in eval mode. Raises
        ValueError naming the file when it is missing, of another format or of inconsistent shapes."""
        json_path = os.path.join(folder, "task.json")
        if not os.path.isfile(json_path):
            raise ValueError(f"{json_path}: missing (not a fine-tuned checkpoint: bfm finetune writes it)")
        with open(json_path) as f:
            spec = json.load(f)
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise ValueError(f"{json_path}: format is not {FORMAT!r}")
        try:
            task, loss, outputs = spec["task"], spec["loss"], int(spec["outputs"])
        except KeyError as e:
            raise ValueError(f"{json_path}: key {e} is missing") from None
        st_path = os.path.join(folder, "task_head.safetensors")
        tensors, _ = read_safetensors(st_path)
        for name in ("task_head.weight", "task_head.bias"):
            if name not in tensors:
                raise ValueError(f"{st_path}: tensor {name} is missing")
            if not bool(torch.isfinite(tensors[name]).all()):
                raise ValueError(f"{st_path}: tensor {name} holds a non-finite value")
        weight, bias = tensors["task_head.weight"], tensors["task_head.bias"]
        if weight.dim() != 2 or weight.shape[0] != outputs or tuple(bias.shape) != (outputs,):
            raise ValueError(f"{st_path}: task_head.weight {tuple(weight.shape)} and task_head.bias "
                             f"{tuple(bias.shape)}, {json_path} says {outputs} outputs")
        mean = scale = None
        if loss == "mse_standardised":
            mean = torch.tensor(spec.get("target_mean") or [], dtype=torch.float64)
            scale = torch.tensor(spec.get("target_scale") or [], dtype=torch.float64)
            if len(mean) != outputs or len(scale) != outputs:
                raise ValueError(f"{json_path}: target_mean and target_scale need {outputs} values each, "
                                 f"have {len(mean)} and {len(scale)}")
        try:
            head = cls(task, loss, weight, bias, mean, scale, spec.get("input", "pooled"))
        except ValueError as e:
            raise ValueError(f"{json_path}: {e}") from None
        head.spec = spec  # everything else task.json records: source checkpoint, steps, validation loss, ...
        return head.to(device=device, dtype=dtype).eval()

    def forward(self, pooled):
        """pooled [B, D] (or the dict BrainModel returns) -> [B, O]: logits, or de-standardised predictions."""
        if isinstance(pooled, dict):
            pooled = pooled[self.input]
        if pooled.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"task head {self.task!r}: input of width {pooled.shape[-1]}, "
                             f"the head takes {self.weight.shape[1]}")
        y = pooled.to(self.weight.dtype) @ self.weight.T + self.bias
        if self.classification:
            return y
        return y * self.target_scale + self.target_mean

    def extra_repr(self):
        kind = "classes" if self.classification else "embedding dimensions"
        return f"task={self.task!r}, {self.outputs} {kind} on a width of {self.weight.shape[1]}"

