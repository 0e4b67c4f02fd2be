"""Point tables into Earth Engine: an accuracy assessment's sample points as a table asset, to label in
the Code Editor.

    terrabeam assess design MAP --ee-table projects/P/assets/assessment-points

The points go up inline, as an `ee.FeatureCollection` of lon/lat points with their properties (id,
stratum, map class, weight, an empty `reference`), through a table export to the asset
(`ee.batch.Export.table.toAsset`): no Cloud Storage bucket is needed. The export runs as an Earth
Engine task; the asset appears when it finishes (the Code Editor's Tasks tab shows it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from transforms.io.earthengine.assets import ASSET_ID, AssetError

# Earth Engine's limit on one request's body is 10 MB; at ~300 bytes a point, 20,000 points stay well
# under it (https://developers.google.com/earth-engine/guides/usage, "Request payload size").
MAX_INLINE_POINTS = 20_000


@dataclasses.dataclass(frozen=True)
class TableRequest:
    """A checked --ee-table: the asset id, the Earth Engine session (`client.EarthEngineConfig`), and
    whether an existing asset may be replaced."""

    asset_id: str
    config: Any
    overwrite: bool = False


def check_table_request(
    asset_id: str,
    *,
    project: str | None = None,
    endpoint: str | None = None,
    key_file: str | None = None,
    overwrite: bool = False,
) -> TableRequest:
    """Validate --ee-table and load the credentials, before anything is drawn or written."""
    from transforms.io.earthengine import client as earthengine

    if not ASSET_ID.fullmatch(asset_id):
        raise AssetError(
            f"--ee-table {asset_id!r} is not an Earth Engine asset id such as "
            "projects/my-project/assets/assessment-points (letters, digits, '_' and '-' in each part)."
        )
    try:
        config = earthengine.EarthEngineConfig(
            project=project or asset_id.split("/")[1],
            endpoint=endpoint or earthengine.STANDARD_URL,
            key_file=key_file,
        )
        earthengine.load_credentials(key_file)  # no credentials: stop now, not after the draw
    except earthengine.EarthEngineInitError as e:
        raise AssetError(str(e)) from None
    return TableRequest(asset_id, config, overwrite)


def upload_points(
    request: TableRequest,
    points: Sequence[Mapping[str, Any]],
    description: str = "terrabeam-assessment-points",
) -> dict[str, Any]:
    """Start the export of `points` (dicts with `lon`, `lat` and the properties to keep) to the table
    asset; returns the task id, the asset id and a Code Editor snippet that shows the points."""
    import ee

    from transforms.io.earthengine import client as earthengine

    if len(points) > MAX_INLINE_POINTS:
        raise AssetError(
            f"{len(points):,} points are more than one Earth Engine request carries ({MAX_INLINE_POINTS:,}); "
            "upload points.csv to Cloud Storage and import it as a table asset instead."
        )
    try:
        earthengine.initialize(request.config)
    except (earthengine.EarthEngineInitError, earthengine.EarthEngineUnavailable) as e:
        raise AssetError(
            f"{e} The design is written; run the command again with --overwrite to export it.", 1
        ) from None
    features = [
        ee.Feature(
            ee.Geometry.Point([float(p["lon"]), float(p["lat"])]),
            {k: v for k, v in p.items() if k not in ("lon", "lat")},
        )
        for p in points
    ]
    try:
        if _exists(request.asset_id):
            if not request.overwrite:
                raise AssetError(
                    f"the Earth Engine asset {request.asset_id} exists; pass --overwrite to replace it, or name "
                    "another --ee-table.",
                    status=1,
                )
            ee.data.deleteAsset(request.asset_id)
        task = ee.batch.Export.table.toAsset(
            collection=ee.FeatureCollection(features), description=description, assetId=request.asset_id
        )
        task.start()
    except ee.EEException as e:
        raise AssetError(
            f"Earth Engine did not start the export of {len(points)} points to {request.asset_id}: "
            f"{str(e).rstrip('.')}. Check that the project may write assets there (--ee-project).",
            status=1,
        ) from None
    return {"task": task.id, "asset": request.asset_id, "snippet": code_editor_snippet(request.asset_id)}


def _exists(asset_id: str) -> bool:
    import ee

    try:
        ee.data.getAsset(asset_id)
    except ee.EEException:
        return False
    return True


def code_editor_snippet(asset_id: str) -> str:
    """Code Editor JavaScript that shows the sample points, to label them one by one."""
    return (
        "// The accuracy assessment's sample points (terrabeam assess design).\n"
        f"var points = ee.FeatureCollection({json.dumps(asset_id)});\n"
        "Map.centerObject(points);\n"
        "Map.addLayer(points, {color: 'ff0000'}, 'assessment points');\n"
        "print('Points to label', points.size());\n"
    )
