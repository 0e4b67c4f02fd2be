"""Change between two class maps of one grid: the transitions, how sure each change is, their areas.

- `transitions`: the transition scheme (one code per from→to pair, unchanged pixels one code, an
  optional "uncertain" code) and the per-pixel arithmetic: codes, the binary change map, the change
  probability from two probability stacks.
- `summary`: the transition matrix in pixels and hectares, gross gain / loss / net per class, the top
  transitions (`change.json`).
- `compare`: two class maps (and their probabilities) read window by window, the change rasters written
  as Cloud-Optimized GeoTIFFs.

No Beam and no TensorFlow: comparing two maps is numpy and GDAL work.
"""

from transforms.change.summary import ChangeSummary, summarise
from transforms.change.transitions import (
    CHANGE_NODATA,
    ChangeError,
    TransitionScheme,
    change_probability,
    transition_codes,
)

__all__ = [
    "CHANGE_NODATA",
    "ChangeError",
    "ChangeSummary",
    "TransitionScheme",
    "change_probability",
    "summarise",
    "transition_codes",
]
