"""The Earth Engine code that uses a deployed model: `ee.Model.fromVertexAi(...)` for Python and the
Code Editor, built from the model folder's earthengine.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def _py(value: Any) -> str:
    return json.dumps(value).replace("true", "True").replace("false", "False")


def snippet_arguments(config: Mapping[str, Any], endpoint: str) -> list[tuple[str, str, str]]:
    """(name, Python source, JavaScript source) of each fromVertexAi argument, from earthengine.json."""
    args = dict(config["fromVertexAi"])
    classes = list(config["classes"])
    out: list[tuple[str, str, str]] = [("endpoint", _py(endpoint), json.dumps(endpoint))]
    for key in ("inputTileSize", "inputOverlapSize"):
        out.append((key, _py(args[key]), json.dumps(args[key])))
    if args.get("proj"):
        crs, scale = args["proj"]["crs"], float(args["proj"]["scale"])
        projection = f"ee.Projection({json.dumps(crs)}).atScale({scale:g})"
        out.append(("proj", projection, projection))
        fixed = bool(args.get("fixInputProj"))
        out.append(("fixInputProj", _py(fixed), json.dumps(fixed)))
    if args.get("outputTileSize"):
        out.append(("outputTileSize", _py(args["outputTileSize"]), json.dumps(args["outputTileSize"])))
    # One band per class, in class order (earthengine.json keeps its keys sorted).
    bands = args["outputBands"]
    names = [c for c in classes if c in bands] + [b for b in bands if b not in classes]

    def band(name: str, js: bool) -> str:
        kind = bands[name].get("type", "float")
        dims = int(bands[name].get("dimensions") or 0)
        parts = [f"{'type' if js else chr(34) + 'type' + chr(34)}: ee.PixelType.{kind}()"]
        if dims:
            parts.append(f"{'dimensions' if js else chr(34) + 'dimensions' + chr(34)}: {dims}")
        return "{" + ", ".join(parts) + "}"

    py_bands = "{\n" + "".join(f"        {json.dumps(n)}: {band(n, False)},\n" for n in names) + "    }"
    js_bands = "{\n" + "".join(f"    {json.dumps(n)}: {band(n, True)},\n" for n in names) + "  }"
    out.append(("outputBands", py_bands, js_bands))
    for key in ("maxPayloadBytes", "payloadFormat"):
        if key in args:
            out.append((key, _py(args[key]), json.dumps(args[key])))
    return out


def python_snippet(config: Mapping[str, Any], endpoint: str, project: str, palette: Sequence[str]) -> str:
    """A ready-to-run Python script that connects Earth Engine to the deployed model."""
    arguments = "".join(f"    {name}={py},\n" for name, py, _ in snippet_arguments(config, endpoint))
    bands = list(config["inputBands"])
    classes = list(config["classes"])
    return (
        "# Earth Engine -> the model on Vertex AI (written by python -m model.serving.deploy from earthengine.json).\n"
        "import ee\n\n"
        f"ee.Initialize(project={json.dumps(project)})  # a Cloud project registered for Earth Engine\n\n"
        f"model = ee.Model.fromVertexAi(\n{arguments})\n\n"
        f"BANDS = {_py(bands)}\n"
        f"CLASSES = {_py(classes)}\n"
        f"PALETTE = {_py([c.lstrip('#') for c in palette])}\n\n"
        "# An image with the bands above, as the model saw them in training (same sensor, processing, units):\n"
        'image = ee.Image("projects/YOUR_PROJECT/assets/YOUR_IMAGE")\n'
        "probabilities = model.predictImage(image.select(BANDS).float().toArray())  # one band per class\n"
        'landcover = probabilities.toArray().arrayArgmax().arrayGet(0).rename("landcover")  # index into CLASSES\n'
        'vis = {"min": 0, "max": len(CLASSES) - 1, "palette": PALETTE}\n'
        'print(landcover.getMapId(vis)["tile_fetcher"].url_format)  # or geemap: Map.addLayer(landcover, vis)\n'
    )


def javascript_snippet(config: Mapping[str, Any], endpoint: str, palette: Sequence[str]) -> str:
    """The same for the Earth Engine Code Editor."""
    arguments = ",\n".join(f"  {name}: {js}" for name, _, js in snippet_arguments(config, endpoint))
    bands = list(config["inputBands"])
    classes = list(config["classes"])
    return (
        "// Earth Engine -> the model on Vertex AI (written by python -m model.serving.deploy from earthengine.json).\n"
        f"var model = ee.Model.fromVertexAi({{\n{arguments}\n}});\n\n"
        f"var bands = {json.dumps(bands)};\n"
        f"var classes = {json.dumps(classes)};\n"
        f"var palette = {json.dumps([c.lstrip('#') for c in palette])};\n\n"
        "// An image with the bands above, as the model saw them in training (same sensor, processing, units):\n"
        "var image = ee.Image('projects/YOUR_PROJECT/assets/YOUR_IMAGE');\n"
        "var probabilities = model.predictImage(image.select(bands).float().toArray());  // one band per class\n"
        "var landcover = probabilities.toArray().arrayArgmax().arrayGet(0).rename('landcover');\n"
        "Map.addLayer(landcover, {min: 0, max: classes.length - 1, palette: palette}, 'landcover');\n"
    )
