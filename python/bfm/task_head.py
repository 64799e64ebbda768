"""The task head of a `bfm finetune` checkpoint: each of the model's output tokens reduced to C values by one linear map
shared by all tokens (the projection), the N x C values of a window side by side, then a linear map to the task's
outputs (model/task_head.h):

    z[b, n, :] = proj_weight @ encoder_out[b, n, :] + proj_bias      proj_weight [C, D], proj_bias [C]
    out[b, :]  = weight @ z[b].flatten() + bias                      weight [O, N*C], bias [O]

Files (docs/EVALUATION.md, "Full fine-tuning"; written by model/task_head.cpp): task_head.safetensors holds
task_head.proj.weight [C, D], task_head.proj.bias [C], task_head.weight [O, N*C] and task_head.bias [O] (float32);
task.json holds format "bfm-task-head", format_version 2, the task, `outputs` (O), `input` ("tokens"), `tokens` (N),
`components` (C), the loss ("cross_entropy" for a class task, "mse_standardised" for an embedding task) and, for the
latter, `target_mean` and `target_scale` [O]: the head was trained on (value - target_mean) / target_scale, so its raw
output times target_scale plus target_mean is the prediction in the targets' own units.

    model = bfm.BrainModel.from_pretrained("ft/")
    head = bfm.TaskHead.from_pretrained("ft/")
    logits = head(model(x))          # or head(model(x)["encoder_out"]); [B, O]
"""
import json
import os

import torch

from .model import read_safetensors

FORMAT = "bfm-task-head"
LOSSES = ("cross_entropy", "mse_standardised")
TENSORS = ("task_head.proj.weight", "task_head.proj.bias", "task_head.weight", "task_head.bias")


class TaskHead(torch.nn.Module):
    """proj_weight [C, D], proj_bias [C], weight [O, N*C], bias [O]; forward(encoder_out [B, N, D]) -> logits [B, O]
    (class task) or predictions [B, O] in the targets' units (embedding task)."""

    def __init__(self, task, loss, proj_weight, proj_bias, weight, bias, target_mean=None, target_scale=None):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"task head {task!r}: loss {loss!r}, expected one of {LOSSES}")
        self.task, self.loss = task, loss
        self.classification = loss == "cross_entropy"
        self.proj_weight = torch.nn.Parameter(torch.as_tensor(proj_weight))
        self.proj_bias = torch.nn.Parameter(torch.as_tensor(proj_bias))
        self.weight = torch.nn.Parameter(torch.as_tensor(weight))
        self.bias = torch.nn.Parameter(torch.as_tensor(bias))
        C = self.proj_weight.shape[0] if self.proj_weight.dim() == 2 else -1
        O = self.weight.shape[0] if self.weight.dim() == 2 else -1
        if (C < 1 or tuple(self.proj_bias.shape) != (C,) or O < 1 or self.weight.shape[1] % C != 0
                or tuple(self.bias.shape) != (O,)):
            raise ValueError(f"task head {task!r}: proj_weight {tuple(self.proj_weight.shape)}, proj_bias "
                             f"{tuple(self.proj_bias.shape)}, weight {tuple(self.weight.shape)} and bias "
                             f"{tuple(self.bias.shape)} are not [C, D], [C], [O, N*C] and [O]")
        if not self.classification and (target_mean is None or target_scale is None
                                         or len(target_mean) != O or len(target_scale) != O):
            raise ValueError(f"task head {task!r}: target_mean and target_scale need {O} values each")
        # Buffers so that .to(device) moves them with the weights; a class head keeps none (0 and 1 would do nothing).
        self.register_buffer("target_mean", None if self.classification else torch.as_tensor(target_mean))
        self.register_buffer("target_scale", None if self.classification else torch.as_tensor(target_scale))

    @property
    def outputs(self):
        return self.weight.shape[0]

    @property
    def components(self):
        return self.proj_weight.shape[0]

    @property
    def tokens(self):
        return self.weight.shape[1] // self.components

    @classmethod
    def from_pretrained(cls, folder, device=None, dtype=torch.float32):
        """The head of a `bfm finetune` output folder (task.json + task_head.safetensors), in eval mode. Raises
        ValueError naming the file when it is missing, of another format, a head on the pooled output (written by
        bfm before 2026-12-04), or of shapes that disagree with task.json."""
        json_path = os.path.join(folder, "task.json")
        if not os.path.isfile(json_path):
            raise ValueError(f"{json_path}: missing (not a fine-tuned checkpoint: bfm finetune writes it)")
        with open(json_path) as f:
            spec = json.load(f)
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise ValueError(f"{json_path}: format is not {FORMAT!r}")
        if spec.get("input", "pooled") != "tokens":
            raise ValueError(f"{json_path}: a head on the pooled output (input {spec.get('input', 'pooled')!r}, "
                             "written by bfm before 2026-12-04); fine-tune the checkpoint again")
        try:
            task, loss, outputs = spec["task"], spec["loss"], int(spec["outputs"])
            tokens, components = int(spec["tokens"]), int(spec["components"])
        except KeyError as e:
            raise ValueError(f"{json_path}: key {e} is missing") from None
        st_path = os.path.join(folder, "task_head.safetensors")
        tensors, _ = read_safetensors(st_path)
        for name in TENSORS:
            if name not in tensors:
                raise ValueError(f"{st_path}: tensor {name} is missing")
            if not bool(torch.isfinite(tensors[name]).all()):
                raise ValueError(f"{st_path}: tensor {name} holds a non-finite value")
        pw, pb, weight, bias = (tensors[n] for n in TENSORS)
        if (pw.dim() != 2 or pw.shape[0] != components or tuple(pb.shape) != (components,)
                or tuple(weight.shape) != (outputs, tokens * components) or tuple(bias.shape) != (outputs,)):
            raise ValueError(f"{st_path}: task_head.proj.weight {tuple(pw.shape)}, task_head.proj.bias "
                             f"{tuple(pb.shape)}, task_head.weight {tuple(weight.shape)}, task_head.bias "
                             f"{tuple(bias.shape)}; {json_path} says {outputs} outputs on {tokens} tokens of "
                             f"{components} components")
        mean = scale = None
        if loss == "mse_standardised":
            mean = torch.tensor(spec.get("target_mean") or [], dtype=torch.float64)
            scale = torch.tensor(spec.get("target_scale") or [], dtype=torch.float64)
            if len(mean) != outputs or len(scale) != outputs:
                raise ValueError(f"{json_path}: target_mean and target_scale need {outputs} values each, "
                                 f"have {len(mean)} and {len(scale)}")
        try:
            head = cls(task, loss, pw, pb, weight, bias, mean, scale)
        except ValueError as e:
            raise ValueError(f"{json_path}: {e}") from None
        head.spec = spec  # everything else task.json records: source checkpoint, steps, validation loss, ...
        return head.to(device=device, dtype=dtype).eval()

    def forward(self, encoder_out):
        """encoder_out [B, N, D] (or the dict BrainModel returns) -> [B, O]: logits, or de-standardised
        predictions."""
        if isinstance(encoder_out, dict):
            encoder_out = encoder_out["encoder_out"]
        if encoder_out.dim() != 3 or encoder_out.shape[1] != self.tokens or \
                encoder_out.shape[2] != self.proj_weight.shape[1]:
            raise ValueError(f"task head {self.task!r}: input of shape {tuple(encoder_out.shape)}, the head takes "
                             f"[B, {self.tokens}, {self.proj_weight.shape[1]}] (every token: a model run without a "
                             f"mask)")
        z = encoder_out.to(self.weight.dtype) @ self.proj_weight.T + self.proj_bias
        y = z.flatten(1) @ self.weight.T + self.bias
        if self.classification:
            return y
        return y * self.target_scale + self.target_mean

    def extra_repr(self):
        kind = "classes" if self.classification else "embedding dimensions"
        return (f"task={self.task!r}, {self.outputs} {kind} on {self.tokens} tokens of width "
                f"{self.proj_weight.shape[1]}, {self.components} components each")
