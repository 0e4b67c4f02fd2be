"""Training, evaluation and export of land-cover models (see model/README.md for the model folder)."""
