"""Training, evaluation and export of land-cover models (the model folder: docs/model-folder.md).

Importing the package does no work: each command starts quietly at the top of its own entry point, and
loads TensorFlow only when it needs it.
"""
