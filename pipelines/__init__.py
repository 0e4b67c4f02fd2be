"""Beam pipelines and the data they run on by default.

Importing the package does no work: each entry point starts quietly at the top of its own main().
"""
