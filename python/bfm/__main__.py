"""python3 -m bfm CHECKPOINT_DIR: loads a released checkpoint and pushes one random batch through it."""
import sys

from .model import main

sys.exit(main(["bfm", *sys.argv[1:]]))
