"""Predicted maps back into Earth Engine: a class-map COG in Cloud Storage registered as an image asset.

    python -m pipelines.predict ... --output gs://BUCKET/maps --ee-asset projects/P/assets/landcover

After the mosaic COG is written, `register_cog_asset` creates a COG-backed Earth Engine image asset
from it (`ee.data.createAsset` with the COG's `gcs_location`, as in Earth Engine's guide "Cloud GeoTiff
Backed Earth Engine Assets"): Earth Engine reads the pixels from the bucket, nothing is uploaded. The
asset carries the label scheme as properties, following the Earth Engine catalog's convention for
class bands (`<band>_class_names`, `_class_values`, `_class_palette`); values are the class indices
0..K-1 of the map, the palette is hex colours without '#'. Property values are strings (comma-separated
lists), the one form asset properties take everywhere. `code_editor_snippet` prints the map in the
Code Editor with the classes' colours and a legend.

Earth Engine reads COGs only from Cloud Storage (and, per its guide, from buckets in the US
multi-region or us-central1), so `check_asset_request` requires a gs:// output; it runs before the
prediction job starts.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from transforms.contracts.label_scheme import LabelScheme, scheme_from_metadata

ASSET_ID = re.compile(r"projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/assets/[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
CLASS_BAND = "classes"
# Where Earth Engine reads a COG-backed asset's files from: Cloud Storage only.
EE_READABLE = ("gs://",)
CLASS_NODATA = 255


class AssetError(ValueError):
    """The asset cannot be registered as asked; the message says what to change. `status` is the exit
    status: 2 for bad options (nothing ran), 1 when registering the written map failed."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class AssetRequest:
    """A checked --ee-asset: the asset id, the Earth Engine session to use (a
    `transforms.io.earthengine.client.EarthEngineConfig`), and whether an existing asset may be replaced."""

    asset_id: str
    config: Any
    overwrite: bool = False


def check_asset_request(
    asset_id: str,
    output: str,
    *,
    project: str | None = None,
    endpoint: str | None = None,
    key_file: str | None = None,
    overwrite: bool = False,
) -> AssetRequest:
    """Validate --ee-asset against --output and load the credentials, before the job starts.

    The Earth Engine project defaults to the asset's; the endpoint to Earth Engine's standard one.
    """
    from transforms.io.earthengine import client as earthengine

    if not ASSET_ID.fullmatch(asset_id):
        raise AssetError(
            f"--ee-asset {asset_id!r} is not an Earth Engine asset id such as projects/my-project/assets/landcover "
            "(letters, digits, '_' and '-' in each part)."
        )
    if not output.startswith(EE_READABLE):
        raise AssetError(
            f"--ee-asset registers the map's COG, which Earth Engine reads from Cloud Storage: give a gs:// "
            f"--output (a bucket in the US multi-region or us-central1), not {output!r}."
        )
    config = earthengine.EarthEngineConfig(
        project=project or asset_id.split("/")[1],
        endpoint=endpoint or earthengine.STANDARD_URL,
        key_file=key_file,
    )
    earthengine.load_credentials(key_file)  # no credentials: stop now, not after the job
    return AssetRequest(asset_id, config, overwrite)


def asset_request(options: Any) -> AssetRequest:
    """The AssetRequest of a job's options (`ee_asset`, `output`, `ee_project`, `ee_endpoint`,
    `ee_key_file`, `overwrite`, as pipelines.predict names them)."""
    return check_asset_request(
        options.ee_asset,
        options.output,
        project=options.ee_project,
        endpoint=options.ee_endpoint,
        key_file=options.ee_key_file,
        overwrite=options.overwrite,
    )


def register_prediction(
    request: AssetRequest,
    summary: Mapping[str, Any],
    model_info: Mapping[str, Any],
    *,
    summary_name: str = "prediction.json",
    band: str = CLASS_BAND,
) -> dict[str, Any]:
    """Register a finished prediction's class-map COG; returns the summary with `earthengine_asset`
    (asset, COG, a message with the Code Editor snippet), also written back to the summary file."""
    from apache_beam.io.filesystems import FileSystems

    output = summary["output"].rstrip("/")
    if band not in summary.get("files", {}):
        raise AssetError(
            f"The prediction in {output} wrote no class map (no tile succeeded): nothing to register.", 1
        )
    cog = f"{output}/{summary['files'][band]}"
    scheme = scheme_from_metadata(model_info)
    extra = {"model": summary.get("model", ""), "prediction": f"{output}/{summary_name}"}
    register_cog_asset(request, cog, scheme, band=band, extra=extra)
    record = {"asset": request.asset_id, "cog": cog}
    updated = {**summary, "earthengine_asset": record}
    with FileSystems.create(f"{output}/{summary_name}") as f:
        f.write((json.dumps(updated, indent=2) + "\n").encode("utf-8"))
    message = (
        f"Earth Engine asset {request.asset_id}, backed by {cog}. In the Code Editor:\n\n"
        + code_editor_snippet(request.asset_id, scheme)
    )
    return {**updated, "earthengine_asset": {**record, "message": message}}


def asset_properties(
    scheme: LabelScheme, band: str = CLASS_BAND, extra: Mapping[str, Any] | None = None
) -> dict:
    """The class names, values and palette of a class map, as asset properties (strings)."""
    properties = {
        f"{band}_class_names": ",".join(scheme.names),
        f"{band}_class_values": ",".join(str(i) for i in range(scheme.num_classes)),
        f"{band}_class_palette": ",".join(c.lstrip("#") for c in scheme.colors),
        f"{band}_nodata": CLASS_NODATA,
        "label_scheme": scheme.name,
    }
    for key, value in (extra or {}).items():
        properties[key] = value if isinstance(value, (int, float)) else str(value)
    return properties


def asset_value(
    cog_uri: str, scheme: LabelScheme, band: str = CLASS_BAND, extra: Mapping[str, Any] | None = None
) -> dict:
    """What `ee.data.createAsset` gets for a COG-backed image asset."""
    if not cog_uri.startswith(EE_READABLE):
        raise AssetError(
            f"Earth Engine reads COGs from Cloud Storage only; {cog_uri!r} is not a gs:// URI.", 1
        )
    return {
        "type": "IMAGE",
        "gcs_location": {"uris": [cog_uri]},
        "properties": asset_properties(scheme, band, extra),
    }


def register_cog_asset(
    request: AssetRequest,
    cog_uri: str,
    scheme: LabelScheme,
    *,
    band: str = CLASS_BAND,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the asset (replacing an existing one if the request allows); returns Earth Engine's answer."""
    import ee

    from transforms.io.earthengine import client as earthengine

    earthengine.initialize(request.config)
    value = asset_value(cog_uri, scheme, band, extra)
    try:
        if request.overwrite and _exists(request.asset_id):
            ee.data.deleteAsset(request.asset_id)
        return ee.data.createAsset(value, request.asset_id)
    except ee.EEException as e:
        detail = str(e).rstrip(".")
        taken = any(word in detail.lower() for word in ("already exists", "overwrite"))
        hint = " Pass --overwrite to replace it." if taken and not request.overwrite else ""
        raise AssetError(
            f"Earth Engine did not register {cog_uri} as {request.asset_id}: {detail}.{hint} The COG stays in Cloud "
            "Storage; Earth Engine needs read access to the bucket (grant the project's Earth Engine service "
            "account Storage Object Viewer) and a bucket in the US multi-region or us-central1.",
            status=1,
        ) from None


def _exists(asset_id: str) -> bool:
    import ee

    try:
        ee.data.getAsset(asset_id)
    except ee.EEException:
        return False
    return True


def code_editor_snippet(asset_id: str, scheme: LabelScheme) -> str:
    """Code Editor JavaScript that shows the registered map in its classes' colours, with a legend."""
    names = json.dumps(list(scheme.names))
    palette = json.dumps([c.lstrip("#") for c in scheme.colors])
    return (
        "// The land-cover map of python -m pipelines.predict, a COG-backed Earth Engine asset.\n"
        f"var classes = {names};\n"
        f"var palette = {palette};\n"
        f"var landcover = ee.Image('{asset_id}').select(0);\n"
        f"landcover = landcover.updateMask(landcover.lt(classes.length));  // {CLASS_NODATA}: no prediction\n"
        "Map.centerObject(landcover);\n"
        "Map.addLayer(landcover, {min: 0, max: classes.length - 1, palette: palette}, 'landcover');\n"
        "var legend = ui.Panel({style: {position: 'bottom-left'}});\n"
        "classes.forEach(function(name, i) {\n"
        "  var swatch = ui.Label('', {backgroundColor: '#' + palette[i], padding: '8px', margin: '0 6px 4px 0'});\n"
        "  legend.add(ui.Panel([swatch, ui.Label(name, {margin: '0 0 4px 0'})], ui.Panel.Layout.Flow('horizontal')));\n"
        "});\n"
        "Map.add(legend);\n"
    )
