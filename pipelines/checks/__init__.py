"""What the jobs check before they start: their sources, labels, model, area and output folder.

Each check stops the job with a `UsageError` (pipelines.shell), or an input error of the module that
found the problem, whose message says what to change. Importing the package does no work.
"""
