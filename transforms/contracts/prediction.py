"""What a prediction writes: the names of its files and how probabilities are encoded.

The writer (transforms.cog, pipelines.predict) and anything that reads a prediction folder share these;
the module imports nothing, so a command's --help can list the encodings without loading the writer.
"""

from __future__ import annotations

PROBABILITIES = ("none", "uint8", "float32")
# uint8 probabilities: round(p * 254), so 255 stays free for nodata.
PROBABILITY_SCALE = 254
PROBABILITY_NODATA_UINT8 = 255

CLASSES_NAME = "classes"
PROBABILITIES_NAME = "probabilities"
POSITIVE_NAME = "probability"
TILES_DIR = "tiles"
QUICKLOOK_NAME = "classes.png"
SUMMARY_NAME = "prediction.json"  # what was predicted and written, and how the job ended
