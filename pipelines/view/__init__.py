"""`python -m pipelines.view [FOLDER]`: a prediction, or a change between two dates, on a web map.

See `pipelines/view/cli.py` for the command line, `maps.py` for what is drawn (`change.py` for a change
folder) and `server.py` for the web app. `start()` serves a viewer from a background thread (for
notebooks).
"""

from pipelines.view.cli import main, start

__all__ = ["main", "start"]
