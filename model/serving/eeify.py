"""Make an image model Earth-Engine-ready: Base64 TensorProto I/O and the matching `earthengine.json`.

    python -m model.serving.eeify SRC OUT --bands B4,B3,B2 --classes water,trees,crops [--tile-size 120]

SRC is a SavedModel folder, a `.keras` file or a terrabeam model folder, whose model takes a float image
`(batch, H, W, C)` and returns either a per-pixel map `(batch, H', W', K)` or one prediction per image
`(batch, K)` (a patch classifier, such as the talk's pretrained BigEarthNet model). OUT gets:

    eeified/            signature `serving_default`: `array` string (batch,) -> one output per class,
                        named after it, string (batch,); each string the web-safe Base64 of a serialized
                        TensorProto: (H, W, C) in (any numeric type, cast to float32), float32 (H', W')
                        out ((1, 1) for a patch classifier)
    earthengine.json    the matching `ee.Model.fromVertexAi` arguments, the input band order, the classes

This is what `ee.Model.fromVertexAi(..., payloadFormat="SERIALIZED_TF_TENSORS")` sends and reads: each
request instance is `{"array": "<tile of image.toArray()>"}`, each prediction has one entry per
`outputBands` name, and `predictImage` returns one band per class, named after it.

`model.export` writes the EE-ified model of every trained model through `write_eeified` and
`earthengine_arguments` below: one implementation for the project's own models and anyone else's.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from model.errors import ModelError
from model.signature import write_signature
from transforms.contracts.label_scheme import (
    PRESETS,
    LabelScheme,
    LabelSchemeError,
    resolve_label_scheme,
    scheme_from_metadata,
)
from transforms.io.files import join, read_json, write_json
from transforms.runtime.command import CommandParser, quiet_start

# TensorFlow and Keras load when a model is read or written, not for --help.
if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# Earth Engine sends an image made with `toArray()` as one array band, named `array`, and reads each
# output of the signature into the `outputBands` entry of the same name.
EE_INPUT_NAME = "array"
SIGNATURE = "serving_default"
EEIFIED_DIR = "eeified"
EARTHENGINE_JSON = "earthengine.json"

# Vertex AI online prediction rejects requests over 1.5 MB ("Quotas and limits" page of Vertex AI);
# Earth Engine batches tiles into requests up to maxPayloadBytes, so one Base64 tile must fit.
VERTEX_AI_MAX_REQUEST_BYTES = 1_500_000
# Tile sides are kept to multiples of this, a common U-Net pooling factor.
EE_TILE_MULTIPLE = 16

# The TensorProto dtypes (tensorflow/core/framework/types.proto) of the pixel types Earth Engine can
# send; decoded tensors of any of them are cast to float32.
EE_INPUT_DTYPES = ("float32", "float64", "int32", "uint8", "int16", "int8", "int64", "uint16", "uint32")


class EEifyError(ModelError):
    """A model or an option that cannot be made Earth-Engine-ready; the message says what to change."""


# --- the wire format ---------------------------------------------------------------------------------


def decode_ee_tensor(encoded: tf.Tensor, shape: Sequence[int | None]) -> tf.Tensor:
    """One Earth Engine tile: web-safe Base64 of a serialized TensorProto -> float32 of `shape` (H, W, C).

    parse_tensor needs the dtype up front, so it is read from the proto: a serialized TensorProto
    starts with field 1 (dtype) as tag byte 0x08 then the enum value (one byte for all pixel types).
    """
    import tensorflow as tf

    proto = tf.io.decode_base64(encoded)
    dtype_enum = tf.cast(tf.io.decode_raw(tf.strings.substr(proto, 1, 1), tf.uint8)[0], tf.int32)
    # switch_case wants branch indices 0..n-1: map each enum value to its position (others to n, the
    # default branch, which parses as float32 and so reports the type mismatch).
    dtypes = [tf.as_dtype(name) for name in EE_INPUT_DTYPES]
    positions = [len(dtypes)] * 256
    for i, dtype in enumerate(dtypes):
        positions[dtype.as_datatype_enum] = i

    def parser(dtype: tf.DType):
        return lambda: tf.cast(tf.io.parse_tensor(proto, dtype), tf.float32)

    branch = tf.gather(tf.constant(positions, tf.int32), dtype_enum)
    tile = tf.switch_case(branch, [parser(d) for d in dtypes], default=parser(tf.float32))
    return tf.ensure_shape(tile, tuple(shape))


def encode_ee_tensor(tensor: tf.Tensor) -> tf.Tensor:
    """The inverse for outputs: a float32 tensor -> web-safe Base64 of its serialized TensorProto."""
    import tensorflow as tf

    return tf.io.encode_base64(tf.io.serialize_tensor(tensor))


# --- the model to wrap -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageModel:
    """A model from a float image batch `(B, H, W, C)` to `(B, H', W', K)` or `(B, K)`.

    `predict` is traced into the EE-ified signature; `resource` is what holds its variables (a Keras
    model or a loaded SavedModel), tracked so that they are saved with it.
    """

    predict: Callable[[tf.Tensor], tf.Tensor]
    resource: Any
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    receptive_field: int | None = None
    source: str = ""

    @property
    def num_bands(self) -> int | None:
        return self.input_shape[3]

    @property
    def num_classes(self) -> int | None:
        return self.output_shape[-1]

    @property
    def input_tile(self) -> tuple[int | None, int | None]:
        return self.input_shape[1], self.input_shape[2]

    @property
    def per_image(self) -> bool:
        """One prediction per input image: `(B, K)`, or `(B, 1, 1, K)` from a larger input."""
        if len(self.output_shape) == 2:
            return True
        height, width = self.output_shape[1:3]
        return (height, width) == (1, 1) and self.input_tile != (1, 1)


def from_keras(model: keras.Model, source: str = "") -> ImageModel:
    """An ImageModel of a Keras model (its receptive field derived from the layers where possible)."""
    from model.architecture import receptive_field

    try:
        field = receptive_field(model)
    except Exception:  # a model whose layers the derivation does not know: the caller may give it
        field = None
    return _checked(
        ImageModel(
            predict=lambda images: model(images, training=False),
            resource=model,
            input_shape=tuple(model.input_shape),
            output_shape=tuple(model.output_shape),
            receptive_field=field,
            source=source or model.name,
        )
    )


def from_saved_model(path: str, output: str | None = None, signature: str = SIGNATURE) -> ImageModel:
    """An ImageModel of a SavedModel signature with one rank-4 image input (local or gs:// path)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise EEifyError(f"Cannot load a SavedModel from {path!r} ({e}).") from None
    if signature not in loaded.signatures:
        raise EEifyError(
            f"The SavedModel at {path!r} has no signature {signature!r} (it has {sorted(loaded.signatures)}); "
            "pass --signature."
        )
    function = loaded.signatures[signature]
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise EEifyError(
            f"Signature {signature!r} of {path!r} takes {sorted(inputs)}; an image model takes one input, "
            "the image (batch, H, W, bands)."
        )
    ((input_name, input_spec),) = inputs.items()
    outputs = dict(function.structured_outputs)
    if output is None:
        if len(outputs) != 1:
            raise EEifyError(
                f"Signature {signature!r} of {path!r} has outputs {sorted(outputs)}; pass --output with the "
                "one that holds the class scores."
            )
        (output,) = outputs
    elif output not in outputs:
        raise EEifyError(
            f"Signature {signature!r} of {path!r} has no output {output!r} (it has {sorted(outputs)})."
        )
    if not (input_spec.dtype.is_floating or input_spec.dtype.is_integer):
        raise EEifyError(
            f"Signature {signature!r} of {path!r} takes {input_spec.dtype.name} input; Earth Engine sends "
            "numbers (an image of float or integer pixels)."
        )

    def predict(images: tf.Tensor) -> tf.Tensor:
        return function(**{input_name: tf.cast(images, input_spec.dtype)})[output]

    return _checked(
        ImageModel(
            predict=predict,
            resource=loaded,
            input_shape=tuple(input_spec.shape.as_list()) if input_spec.shape.rank is not None else (),
            output_shape=tuple(outputs[output].shape.as_list()) if outputs[output].shape.rank else (),
            source=path,
        )
    )


def _checked(model: ImageModel) -> ImageModel:
    where = model.source or "the model"
    if len(model.input_shape) != 4:
        raise EEifyError(
            f"{where} takes input of shape {model.input_shape or 'unknown'}; Earth Engine sends image tiles "
            "(batch, H, W, bands)."
        )
    if len(model.output_shape) not in (2, 4):
        raise EEifyError(
            f"{where} outputs shape {model.output_shape or 'unknown'}; expected a per-pixel map "
            "(batch, H, W, classes) or one prediction per image (batch, classes)."
        )
    return model


def load_image_model(src: str, output: str | None = None, signature: str = SIGNATURE) -> ImageModel:
    """A `.keras` file, a SavedModel folder, or a terrabeam model folder (its `saved_model/`)."""
    import keras
    import tensorflow as tf

    if src.endswith(".keras"):
        if not tf.io.gfile.exists(src):
            raise EEifyError(f"No Keras model file at {src!r}.")
        import model.architecture  # noqa: F401 - registers the project's custom layers

        try:
            return from_keras(keras.saving.load_model(src, compile=False), source=src)
        except (ValueError, TypeError, OSError) as e:
            raise EEifyError(
                f"Cannot load the Keras model {src!r} ({e}). A model with custom layers loads where they "
                "are registered; export it as a SavedModel (`model.export(path)`) and pass that folder."
            ) from None
    terrabeam = join(src, "saved_model")
    if tf.io.gfile.exists(join(terrabeam, "saved_model.pb")):
        return from_saved_model(terrabeam, output, signature)
    if tf.io.gfile.exists(join(src, "saved_model.pb")):
        return from_saved_model(src, output, signature)
    raise EEifyError(
        f"{src!r} is neither a SavedModel folder (with saved_model.pb), a .keras file nor a terrabeam model "
        "folder."
    )


# --- the EE-ified SavedModel -------------------------------------------------------------------------


def write_eeified(model: ImageModel, path: str, class_names: Sequence[str], num_bands: int) -> None:
    """Write the SavedModel Earth Engine calls: `array` (Base64 tiles) in, one output per class out.

    Each output is named after its class and holds, per tile, the class's scores as a float32 (H', W')
    TensorProto ((1, 1) for a patch classifier), so `predictImage` gives one band per class.
    """
    import keras
    import tensorflow as tf

    names = list(class_names)
    if model.num_classes is not None and model.num_classes != len(names):
        raise EEifyError(
            f"{model.source or 'The model'} outputs {model.num_classes} classes but {len(names)} class names "
            f"were given ({', '.join(names)}); name each output class once, in output order."
        )
    if model.num_bands is not None and model.num_bands != num_bands:
        raise EEifyError(
            f"{model.source or 'The model'} takes {model.num_bands} bands but {num_bands} band names were "
            "given; name each input band once, in input order."
        )
    height, width = model.input_tile
    tile_shape = (height, width, num_bands)
    count = len(names)

    def serve(array: tf.Tensor) -> dict[str, tf.Tensor]:
        tiles = tf.map_fn(
            lambda s: decode_ee_tensor(s, tile_shape),
            array,
            fn_output_signature=tf.TensorSpec(tile_shape, tf.float32),
        )
        scores = tf.cast(model.predict(tiles), tf.float32)
        if scores.shape.rank == 2:  # a patch classifier: one 1x1 pixel per tile
            scores = scores[:, None, None, :]
        # One map_fn encodes every class plane of a tile; column k is class k's output.
        encoded = tf.map_fn(
            lambda s: tf.stack([encode_ee_tensor(s[..., k]) for k in range(count)]),
            scores,
            fn_output_signature=tf.TensorSpec((count,), tf.string),
        )
        return {name: encoded[:, k] for k, name in enumerate(names)}

    # A Keras model's variables are saved with the trace; a loaded SavedModel may hold tables too.
    tracked = None if isinstance(model.resource, keras.Model) else model.resource
    spec = tf.TensorSpec((None,), tf.string, name=EE_INPUT_NAME)
    write_signature(path, SIGNATURE, serve, [spec], tracked=tracked)


# --- earthengine.json ------------------------------------------------------------------------------


def overlap_for(receptive_field: int | None) -> int:
    """Earth Engine's inputOverlapSize (the total over both edges) for a border of half the receptive
    field, so that every kept pixel saw all of its context."""
    return 2 * math.ceil(int(receptive_field or 0) / 2)


def largest_tile(num_bands: int, num_classes: int, overlap: int = 0) -> int:
    """The largest multiple of EE_TILE_MULTIPLE whose Base64 tile fits one Vertex AI request, both ways
    (the request carries the bands, the response the classes; float32, Base64-inflated); at least the
    overlap plus EE_TILE_MULTIPLE."""
    bytes_per_pixel = 4 * max(num_bands, num_classes) * 4 / 3
    fitting = int(math.sqrt(VERTEX_AI_MAX_REQUEST_BYTES * 0.95 / bytes_per_pixel))
    return max(fitting // EE_TILE_MULTIPLE * EE_TILE_MULTIPLE, overlap + EE_TILE_MULTIPLE)


def earthengine_arguments(
    *,
    bands: Sequence[str],
    scheme: LabelScheme,
    tile: Sequence[int],
    overlap: int = 0,
    output_tile: Sequence[int] | None = None,
    crs: str | None = None,
    scale: float | None = None,
) -> dict[str, Any]:
    """earthengine.json: the `ee.Model.fromVertexAi` arguments of an EE-ified model (JSON-ready).

    `outputBands` names one scalar float band per class, in class order, as the EE-ified signature
    outputs them. `proj` (with fixInputProj) is set when the model was trained on a known grid.
    """
    args: dict[str, Any] = {
        "endpoint": "projects/PROJECT/locations/REGION/endpoints/ENDPOINT_ID",
        "inputTileSize": [int(tile[0]), int(tile[1])],
        "inputOverlapSize": [int(overlap), int(overlap)],
        "inputTypeOverride": {EE_INPUT_NAME: {"type": "PixelType", "precision": "float", "dimensions": 1}},
        "outputBands": {name: {"type": "float", "dimensions": 0} for name in scheme.names},
        "maxPayloadBytes": VERTEX_AI_MAX_REQUEST_BYTES,
        "payloadFormat": "SERIALIZED_TF_TENSORS",
    }
    if crs and scale:
        args["proj"] = {"crs": crs, "scale": float(scale)}
        args["fixInputProj"] = True
    if output_tile is not None:
        args["outputTileSize"] = [int(output_tile[0]), int(output_tile[1])]
    return {
        "inputBands": list(bands),
        "classes": list(scheme.names),
        "label_scheme": scheme.to_json(),
        "fromVertexAi": args,
        "usage": (
            "image.select(inputBands).float().toArray() -> ee.Model.fromVertexAi(**fromVertexAi, with proj "
            "as ee.Projection(crs).atScale(scale) and each outputBands type as ee.PixelType) -> "
            ".predictImage(...) gives one float band per class, named after it; "
            ".toArray().arrayArgmax().arrayGet(0) is the class index into `classes`. "
            "`python -m model.serving.deploy` prints the call ready to paste."
        ),
    }


def tile_geometry(
    model: ImageModel,
    num_bands: int,
    num_classes: int,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
) -> tuple[list[int], int, list[int] | None]:
    """(inputTileSize, inputOverlapSize, outputTileSize or None) for a model, checked.

    A model with a fixed input size gets that size; a patch classifier gets 1x1 outputs and no overlap;
    a per-pixel model of any input size gets the largest tile that fits a request, with the overlap of
    its receptive field (or `overlap`).
    """
    height, width = model.input_tile
    if height is not None and width is not None:
        if tile_size is not None and (tile_size, tile_size) != (height, width):
            raise EEifyError(
                f"The model only takes {height}x{width} tiles; leave out --tile-size or match it."
            )
        tile = [height, width]
    elif height is not None or width is not None:
        raise EEifyError(
            f"The model takes tiles of {height}x{width}; Earth Engine needs both sides fixed or both free."
        )
    elif tile_size is not None:
        tile = [tile_size, tile_size]
    elif model.per_image:
        raise EEifyError(
            "The model gives one prediction per image of any size: pass --tile-size with the image size it "
            "was trained on (e.g. --tile-size 120 for BigEarthNet's 120x120 patches)."
        )
    else:
        tile = None  # the largest that fits, once the overlap is known
    if model.per_image:
        if overlap:
            raise EEifyError(
                "A patch classifier predicts whole tiles; --overlap does not apply (leave it out)."
            )
        _check_payload(tile, num_bands, num_classes, output_tile=[1, 1])
        return tile, 0, [1, 1]
    border = overlap if overlap is not None else overlap_for(model.receptive_field)
    if border < 0 or border % 2:
        raise EEifyError(
            f"--overlap must be an even number of pixels (2N for an N-pixel border), got {border}."
        )
    if tile is None:
        tile = [largest_tile(num_bands, num_classes, border)] * 2
    if border >= min(tile):
        raise EEifyError(
            f"--overlap {border} leaves nothing of a {tile[0]}x{tile[1]} tile; use a smaller overlap."
        )
    out_height, out_width = model.output_shape[1:3]
    output_tile = None
    if out_height is not None and out_width is not None and [out_height, out_width] != tile:
        output_tile = [out_height, out_width]
    _check_payload(tile, num_bands, num_classes, output_tile or tile)
    return tile, border, output_tile


def _check_payload(tile: Sequence[int], num_bands: int, num_classes: int, output_tile: Sequence[int]) -> None:
    # float32 values, Base64 (4/3); the larger of the request (the tile) and the answer (the output).
    request = 4 * tile[0] * tile[1] * num_bands * 4 / 3
    answer = 4 * output_tile[0] * output_tile[1] * num_classes * 4 / 3
    per_tile = max(request, answer)
    if per_tile > VERTEX_AI_MAX_REQUEST_BYTES:
        raise EEifyError(
            f"One {tile[0]}x{tile[1]} tile of {num_bands} bands / {num_classes} classes is "
            f"{per_tile / 1e6:.1f} MB in Base64, over Vertex AI's {VERTEX_AI_MAX_REQUEST_BYTES / 1e6:.1f} MB "
            "per request; use a smaller --tile-size (or a model that takes smaller tiles)."
        )


# --- command line ----------------------------------------------------------------------------------


def parse_classes(spec: str | None, count: int | None) -> LabelScheme:
    """--classes: a preset, the binary shortcut, a classes file, or comma-separated names."""
    if spec:
        text = spec.strip()
        if text in PRESETS or text.startswith("binary:") or text.endswith(".json"):
            return resolve_label_scheme(text)
        names = [n.strip() for n in text.split(",") if n.strip()]
        return scheme_from_metadata({"classes": names})
    if count is None:
        raise EEifyError("The model does not say how many classes it outputs; pass --classes.")
    return scheme_from_metadata({"classes": [f"class_{i}" for i in range(count)]})


def eeify(
    src: str,
    out: str,
    *,
    bands: Sequence[str] | None = None,
    classes: str | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    crs: str | None = None,
    scale: float | None = None,
    output: str | None = None,
    signature: str = SIGNATURE,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `<out>/eeified/` and `<out>/earthengine.json` for the model at `src`; returns the latter.

    Bands, classes, grid and receptive field default to a terrabeam model folder's model.json.
    """
    import tensorflow as tf

    info = read_json(join(src, "model.json")) or {}
    model = load_image_model(src, output, signature)
    band_names = list(bands or info.get("bands") or [])
    if not band_names:
        raise EEifyError(
            f"Name the model's {model.num_bands or ''} input bands, in input order: --bands B4,B3,B2 (Earth "
            "Engine sends them in this order)."
        )
    scheme = (
        scheme_from_metadata(info)
        if classes is None and info.get("classes")
        else parse_classes(classes, model.num_classes)
    )
    if model.receptive_field is None and info.get("receptive_field"):
        model = dataclasses.replace(model, receptive_field=int(info["receptive_field"]))
    if tile_size is None and model.per_image and info.get("patch_size"):
        tile_size = int(info["patch_size"])
    tile, border, output_tile = tile_geometry(
        model, len(band_names), scheme.num_classes, tile_size=tile_size, overlap=overlap
    )
    if (crs is None) != (scale is None):
        raise EEifyError("Give --crs and --scale together (the grid the model was trained on), or neither.")
    crs = crs or info.get("crs")
    scale = scale or info.get("scale")
    target = join(out, EEIFIED_DIR)
    if tf.io.gfile.exists(target):
        if not overwrite:
            raise EEifyError(f"{target!r} exists; pass --overwrite to replace it.")
        tf.io.gfile.rmtree(target)
    tf.io.gfile.makedirs(out)
    write_eeified(model, target, scheme.names, len(band_names))
    config = earthengine_arguments(
        bands=band_names,
        scheme=scheme,
        tile=tile,
        overlap=border,
        output_tile=output_tile,
        crs=crs,
        scale=scale,
    )
    write_json(join(out, EARTHENGINE_JSON), config)
    return config


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        "model.serving.eeify",
        "Wrap an image model in the Base64 TensorProto I/O Earth Engine sends (ee.Model.fromVertexAi) and "
        "write its earthengine.json.",
        usage="%(prog)s SRC OUT [options]",
        allow_abbrev=True,
    )
    folders = parser.add_argument_group("model in and out")
    folders.add_argument(
        "src",
        metavar="SRC",
        help="SavedModel folder, .keras file or terrabeam model folder (local or gs://).",
    )
    folders.add_argument(
        "out", metavar="OUT", help="Output folder: eeified/ and earthengine.json are written there."
    )
    folders.add_argument("--signature", default=SIGNATURE, help="SavedModel signature.")
    folders.add_argument(
        "--output", help="The signature output holding the class scores (when it has several)."
    )
    folders.add_argument("--overwrite", action="store_true", help="Replace an existing OUT/eeified/.")
    names = parser.add_argument_group("bands and classes")
    names.add_argument(
        "--bands", help="Input band names in input order, comma-separated (default: model.json's)."
    )
    names.add_argument(
        "--classes",
        help="Output classes in output order: comma-separated names, a preset (dynamic-world, worldcover, nlcd), "
        "binary:NAME=V or a classes file (.json). Default: model.json's, else class_0, class_1, ...",
    )
    tiles = parser.add_argument_group("Earth Engine tiles and grid")
    tiles.add_argument(
        "--tile-size",
        type=int,
        help="Tile side Earth Engine sends (default: the model's input size, else the "
        "largest that fits a Vertex AI request).",
    )
    tiles.add_argument(
        "--overlap",
        type=int,
        help="Total overlap between tiles in pixels, even (default: the receptive field where it can be derived).",
    )
    tiles.add_argument(
        "--crs", help="CRS of the grid the model expects, e.g. EPSG:32632 (sets proj and fixInputProj)."
    )
    tiles.add_argument("--scale", type=float, help="Pixel size of that grid in CRS units (with --crs).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    args = _parser().parse_args(argv)
    bands = [b.strip() for b in args.bands.split(",") if b.strip()] if args.bands else None
    try:
        for value, flag in ((args.tile_size, "--tile-size"), (args.scale, "--scale")):
            if value is not None and value <= 0:
                raise EEifyError(f"{flag} must be positive, got {value}.")
        config = eeify(
            args.src,
            args.out,
            bands=bands,
            classes=args.classes,
            tile_size=args.tile_size,
            overlap=args.overlap,
            crs=args.crs,
            scale=args.scale,
            output=args.output,
            signature=args.signature,
            overwrite=args.overwrite,
        )
    except (ModelError, LabelSchemeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vertex = config["fromVertexAi"]
    print(
        f"Earth-Engine-ready model in {join(args.out, EEIFIED_DIR)}: bands {', '.join(config['inputBands'])} -> "
        f"{len(config['classes'])} class bands; tiles {vertex['inputTileSize']}, overlap "
        f"{vertex['inputOverlapSize']}. Arguments in {join(args.out, EARTHENGINE_JSON)}; deploy with "
        f"`python -m model.serving.deploy {args.out} --project P --region R`."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
