#!/usr/bin/python3
"""Load a released bfm checkpoint in PyTorch and embed some windows: the example the model cards point to.

    pip install ./python        # once: the bfm package (python/README.md)
    python3 tools/load_checkpoint_example.py runs/quickstart/release

Prints the model's size and the shape of the pooled embeddings of a random batch. Run from a checkout without
installing, it imports the package from the checkout's python/ folder.
"""
import os
import sys

import torch

try:
    import bfm
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import bfm


def main(folder):
    model = bfm.BrainModel.from_pretrained(folder)  # eval mode, float32, on the CPU (device= for a GPU)
    config = model.config
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
