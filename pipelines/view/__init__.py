"""`python -m pipelines.view [PREDICTIONS]`: a prediction on a web map, served from this machine.

See `pipelines/view/cli.py` for the command line, `maps.py` for what is drawn and `server.py` for the
web app. `start()` serves a viewer from a background thread (for notebooks).
"""

from pipelines.view.cli import main, start

__all__ = ["main", "start"]
