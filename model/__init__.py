"""Training, evaluation and export of land-cover models (the model folder: docs/model-folder.md)."""

import sys

# `python -m model.<command>`: Python runs this before the command's own imports (sys.argv[0] is "-m"
# while it locates the module), the one moment to keep TensorFlow's start-up lines quiet.
if sys.argv[:1] == ["-m"]:
    from transforms.runtime.command import quiet_start

    quiet_start(sys.argv[1:])
