#!/usr/bin/python3
"""Load a released bfm checkpoint in PyTorch and embed some windows: the example the model cards point to.

    /usr/bin/python3 tools/load_checkpoint_example.py runs/quickstart/release

Prints the model's size and the shape of the pooled embeddings of a random batch. Uses tools/bfm_torch.py, the
independent PyTorch implementation of docs/MODEL_SPEC.md (copy both files next to your code to use them elsewhere).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bfm_torch import BrainModel, load_checkpoint  # noqa: E402


def main(folder):
    config, state = load_checkpoint(folder)
    model = BrainModel(config)
    model.load_state_dict(state)
    model.eval()
    n = sum(p.numel() for p in model.parameters())
    x = torch.randn(4, config["window"], config["n_parcels"])  # [batch, time points, parcels], z-scored series
    with torch.no_grad():
        out = model(x)
    print(f"{folder}: {n} parameters, objectives {config['objectives']}; "
          f"pooled embeddings {tuple(out['pooled'].shape)}, encoder output {tuple(out['encoder_out'].shape)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
