"""Beam pipelines and the data they run on by default."""
