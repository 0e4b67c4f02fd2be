"""Training, evaluation and export of land-cover models (see model/README.md for the model folder)."""

import sys

# `python -m model.<command>`: Python runs this before the command's own imports (sys.argv[0] is "-m"
# while it locates the module), the one moment to keep TensorFlow's start-up lines quiet.
if sys.argv[:1] == ["-m"]:
    from transforms.runtime.command import quiet_start

    quiet_start(sys.argv[1:])
