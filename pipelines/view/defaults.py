"""The viewer's defaults, shared by its command line (whose --help loads none of the map code) and the maps."""

DEFAULT_PREDICTIONS = "out/demo/predictions"
DEFAULT_PORT = 8000
MAX_POINTS = 20_000  # training points drawn at most (read from the records' metadata)
