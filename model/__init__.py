"""Training, evaluation and export of land-cover models (see model/README.md for the model folder).

Importing the package does no work: each command starts quietly at the top of its own entry point, and
loads TensorFlow only when it needs it.
"""
