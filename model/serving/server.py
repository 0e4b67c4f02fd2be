"""The prediction server behind `python -m model.serving.serve` (see that module for the wire formats):
TensorProto <-> numpy, the request parser, the loaded model (`Predictor`) and the Starlette app.

Needs the `[serve]` extra (starlette, uvicorn, pybase64, orjson); the command line imports this module
only to run the server, so its --help works without them.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import contextlib
import ctypes
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pybase64
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from model.errors import ModelError
from model.serving.contract import (
    DEFAULT_HEALTH_ROUTE,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PREDICT_ROUTE,
    DEFAULT_THREADS,
    ENVELOPE_BYTES,
)
from transforms.contracts.protowire import LENGTH_DELIMITED, VARINT, field, fields, varint
from transforms.io.files import join, read_json
from transforms.runtime.tensor_memory import aligned_batch, lend_to_tensorflow, read_in_place

logger = logging.getLogger("terrabeam.serve")


# glibc's malloc hands multi-megabyte blocks back to the system when they are freed and maps fresh
# pages for the next request, so each request paid for page faults on its body, Base64 and tensor
# buffers (about as much again as the decoding itself). Keeping blocks up to this size in the heap
# lets consecutive requests reuse them; the heap keeps at most TRIM bytes free.
MALLOC_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit
MALLOC_TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>


def tune_malloc() -> bool:
    """Apply the malloc thresholds above (glibc only; elsewhere a no-op returning False)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES)
    )


class BadRequest(Exception):
    """A request the server cannot answer; the message says what the client should change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------
# TensorProto <-> numpy, without building TensorFlow ops per request.

_TENSOR_PB2 = None


def _protos():
    """tensorflow.core.framework protos, imported on first use (TensorFlow is slow to import)."""
    global _TENSOR_PB2
    if _TENSOR_PB2 is None:
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

        _TENSOR_PB2 = (tensor_pb2, tensor_shape_pb2, types_pb2)
    return _TENSOR_PB2


def _dtype_table() -> dict[int, tuple[np.dtype, str]]:
    """TensorProto dtype enum -> (numpy dtype, repeated field that holds values without tensor_content).

    The pixel types Earth Engine can send, as in model.export (each is cast to float32).
    """
    types = _protos()[2]
    return {
        types.DT_FLOAT: (np.dtype("<f4"), "float_val"),
        types.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
        types.DT_INT32: (np.dtype("<i4"), "int_val"),
        types.DT_UINT8: (np.dtype("u1"), "int_val"),
        types.DT_INT16: (np.dtype("<i2"), "int_val"),
        types.DT_INT8: (np.dtype("i1"), "int_val"),
        types.DT_INT64: (np.dtype("<i8"), "int64_val"),
        types.DT_UINT16: (np.dtype("<u2"), "int_val"),
        types.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    }


_DTYPES: dict[int, tuple[np.dtype, str]] | None = None


def decode_tensor(encoded: str | bytes | memoryview) -> np.ndarray:
    """Web-safe Base64 (padding optional) of a serialized TensorProto -> numpy array of its dtype.

    Raises BadRequest naming the problem: not Base64, not a TensorProto, an unsupported dtype, or a
    shape that disagrees with the values it carries (a proto cannot make the server allocate more
    than the request holds: values are never broadcast).
    """
    global _DTYPES
    if _DTYPES is None:
        _DTYPES = _dtype_table()
    tensor_pb2, _, types_pb2 = _protos()
    padding = -len(encoded) % 4
    if padding:
        encoded = encoded + "=" * padding if isinstance(encoded, str) else bytes(encoded) + b"=" * padding
    try:
        raw = pybase64.b64decode(encoded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"is not web-safe Base64 ({e})") from None
    dense = _dense_tensor(raw)
    if dense is not None and dense[0] in _DTYPES:
        dtype, shape, content = _DTYPES[dense[0]][0], dense[1], dense[2]
        if len(content) == math.prod(shape) * dtype.itemsize:
            return np.frombuffer(content, dtype).reshape(shape)
    try:
        proto = tensor_pb2.TensorProto.FromString(raw)
    except Exception as e:  # google.protobuf.message.DecodeError, or RuntimeWarning-free variants
        raise BadRequest(f"is Base64 but not a serialized TensorProto ({e.__class__.__name__})") from None
    if proto.dtype == types_pb2.DT_INVALID:
        raise BadRequest("is Base64 but not a serialized TensorProto (no dtype)")
    if proto.dtype not in _DTYPES:
        name = (
            types_pb2.DataType.Name(proto.dtype)
            if proto.dtype in types_pb2.DataType.values()
            else proto.dtype
        )
        raise BadRequest(f"is a TensorProto of dtype {name}; send a numeric pixel type (float32 preferred)")
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise BadRequest("is a TensorProto without a fully known shape")
    dtype, values_field = _DTYPES[proto.dtype]
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = math.prod(shape)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise BadRequest(
                f"is a TensorProto of shape {shape} whose tensor_content holds "
                f"{len(proto.tensor_content)} bytes instead of {count * dtype.itemsize}"
            )
        return np.frombuffer(proto.tensor_content, dtype).reshape(shape)
    values = getattr(proto, values_field)
    if len(values) != count:
        raise BadRequest(f"is a TensorProto of shape {shape} with {len(values)} values instead of {count}")
    return np.asarray(values, dtype).reshape(shape)


# TensorProto fields (tensorflow/core/framework/tensor.proto) read by hand: 1 dtype, 2 tensor_shape,
# 3 version_number, 4 tensor_content; TensorShapeProto: 2 dim, 3 unknown_rank; Dim: 1 size, 2 name.
_FIELD_WIRE_TYPES = {1: VARINT, 2: LENGTH_DELIMITED, 3: VARINT, 4: LENGTH_DELIMITED}


def _dense_tensor(raw: bytes) -> tuple[int, tuple[int, ...], memoryview] | None:
    """(dtype, shape, tensor_content as a view into `raw`) of a TensorProto that holds nothing else.

    A request's tensors are several megabytes: reading the few header bytes by hand lets the pixels be
    used where they lie in the decoded Base64, where protobuf's parser copied them twice (about as long
    as decoding the Base64). Anything else (values in repeated fields, named or unknown dimensions,
    a field given twice, malformed bytes) returns None, and protobuf parses it and says what is wrong.
    """
    found: dict[int, Any] = {}
    try:
        for number, wire, value in fields(raw):
            if wire != _FIELD_WIRE_TYPES.get(number) or number in found:
                return None
            found[number] = value
        if 1 not in found or 4 not in found:
            return None
        shape: list[int] = []
        for number, wire, dim in fields(found.get(2, b"")):
            if number != 2 or wire != LENGTH_DELIMITED:
                return None  # unknown_rank, or a field TensorShapeProto does not have
            size = 0
            for dim_number, dim_wire, value in fields(dim):
                if dim_number != 1 or dim_wire != VARINT or value >= 2**63:
                    return None  # a named or negative (unknown) dimension
                size = value
            shape.append(size)
    except (IndexError, ValueError):
        return None
    return found[1], tuple(shape), found[4]


def encode_tensor(array: np.ndarray) -> str:
    """A float32 array -> web-safe Base64 (no padding) of its serialized TensorProto.

    The same bytes as the EE-ified model's `tf.io.encode_base64(tf.io.serialize_tensor(x))`.
    """
    return _encode_tensor_bytes(array).decode("ascii")


def _encode_tensor_bytes(array: np.ndarray) -> bytes:
    return b"".join(_encode_tensor_pieces(array))


# Below this many bytes of values a tensor is encoded in one piece (the copy that saves is negligible).
_SPLIT_ENCODING_BYTES = 1 << 16


def _encode_tensor_pieces(array: np.ndarray) -> list[bytes | memoryview]:
    """Pieces whose concatenation is `encode_tensor(array)`'s bytes, none a copy of the values."""
    # The TensorProto is written by hand (protobuf's wire format, fields in number order, as protobuf
    # writes them): building the message and serializing it copied each answer plane twice more, and
    # those copies were most of the encoding time of a request (benchmarks/serve_latency.py).
    array = np.asarray(array, dtype="<f4", order="C")  # (ascontiguousarray makes a scalar 1-D)
    header = _float_tensor_header(array)
    if array.nbytes < _SPLIT_ENCODING_BYTES:
        return [pybase64.b64encode(header + memoryview(array), altchars=b"-_").rstrip(b"=")]
    values = memoryview(array).cast("B")
    # Base64 turns each 3 bytes into 4 characters, so the header with the first values up to a multiple
    # of 3 bytes and the other values encode apart into the same characters as the whole: the values
    # are not first copied behind the header, and the padding is cut from a view, not a copy.
    lead = -len(header) % 3
    head = pybase64.b64encode(header + values[:lead], altchars=b"-_")
    rest = pybase64.b64encode(values[lead:], altchars=b"-_")
    padding = -len(values[lead:]) % 3
    return [head, memoryview(rest)[: len(rest) - padding]]


def _float_tensor_header(array: np.ndarray) -> bytes:
    """A DT_FLOAT TensorProto of `array`'s shape up to its tensor_content's bytes (which follow it)."""
    # TensorShapeProto.Dim {1: size}; a size of 0 is proto3's default and not written.
    dims = b"".join(field(b"\x12", b"\x08" + varint(n) if n else b"") for n in array.shape)
    header = b"\x08\x01" + field(b"\x12", dims)  # {1: dtype DT_FLOAT, 2: tensor_shape}
    return header + b"\x22" + varint(array.nbytes) if array.nbytes else header  # {4: tensor_content}


# --------------------------------------------------------------------------------------------------
# The model and the request protocol.

SERIALIZED = "SERIALIZED_TF_TENSORS"
# The probabilities output of a model folder's saved_model/ (model.architecture.OUTPUT_NAME).
PROBABILITIES = "probabilities"
NAMED_ARRAYS = "NAMED_ARRAYS"
ND_ARRAYS = "ND_ARRAYS"


class Predictor:
    """A loaded model folder: metadata, wire names and the `saved_model/` serving function.

    `predict_json(body)` turns a request body into a response body (both bytes); it is what the HTTP
    handler runs on a worker thread.
    """

    def __init__(
        self,
        metadata: Mapping[str, Any],
        earthengine: Mapping[str, Any] | None,
        predict_fn: Callable[[np.ndarray], Mapping[str, np.ndarray]],
        *,
        input_name: str,
        source: str = "",
    ) -> None:
        self.metadata = dict(metadata)
        self.earthengine = dict(earthengine or {})
        self.bands = list(self.metadata["bands"])
        self.classes = list(self.metadata["classes"])
        self.input_name = input_name
        self.source = source
        self._predict_fn = predict_fn
        self._keepalive: Any = None  # what predict_fn needs kept alive (the loaded SavedModel)
        args = self.earthengine.get("fromVertexAi", {})
        output_bands = args.get("outputBands") or {}
        # One scalar band per class, named after it (model.serving.eeify's outputs): each is a slice of the
        # model's probabilities, answered in class order. Otherwise (folders exported before) each name
        # is a model output.
        self.per_class = sorted(output_bands) == sorted(self.classes) and all(
            int((band or {}).get("dimensions", 0)) == 0 for band in output_bands.values()
        )
        self._sources: dict[str, tuple[str, int | None]]
        if self.per_class:
            self.output_names = list(self.classes)
            self._sources = {name: (PROBABILITIES, k) for k, name in enumerate(self.classes)}
        else:
            self.output_names = list(output_bands) or [PROBABILITIES]
            self._sources = {name: (name, None) for name in self.output_names}
        self.max_payload_bytes = int(args.get("maxPayloadBytes") or 0) or None
        self.input_tile_size = args.get("inputTileSize")

    @classmethod
    def load(cls, model_dir: str) -> Predictor:
        """Load `model_dir` (local or gs://) as written by `model.export.export_model`."""
        import tensorflow as tf

        from model import export

        metadata = export.load_model_metadata(model_dir)
        earthengine = read_json(join(model_dir, export.EARTHENGINE_JSON))
        saved_model = join(model_dir, export.SAVED_MODEL_DIR)
        try:
            loaded = tf.saved_model.load(saved_model)
        except (OSError, tf.errors.OpError) as e:
            raise ModelError(
                f"Cannot load the SavedModel at {saved_model!r} ({e}); re-export the model."
            ) from None
        try:
            signature = loaded.signatures[export.SIGNATURE]
        except KeyError:
            raise ModelError(
                f"{saved_model!r} has no {export.SIGNATURE!r} signature (it has {list(loaded.signatures)})."
            ) from None
        (input_spec,) = signature.structured_input_signature[1].values()
        outputs = sorted(signature.structured_outputs)

        def predict_fn(batch: np.ndarray) -> dict[str, np.ndarray]:
            result = signature(**{input_spec.name: lend_to_tensorflow(batch)})
            return {name: read_in_place(tensor) for name, tensor in result.items()}

        predictor = cls(metadata, earthengine, predict_fn, input_name=export.EE_INPUT_NAME, source=model_dir)
        predictor._keepalive = loaded  # the signature alone does not keep the variables
        missing = sorted({source for source, _ in predictor._sources.values()} - set(outputs))
        if missing:
            raise ModelError(
                f"earthengine.json asks for output bands {predictor.output_names}, which need the outputs "
                f"{missing}, but {saved_model!r} outputs {outputs}; re-export the model."
            )
        predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """One small prediction, so that the first request does not pay for TensorFlow's first call."""
        side = 16
        if self.input_tile_size:
            side = int(self.input_tile_size[0])
        self._predict_fn(np.zeros((1, side, side, len(self.bands)), np.float32))

    # -- request protocol -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What a client needs to know to call the server (served on the health route)."""
        return {
            "status": "ready",
            "model": self.source,
            "inputs": {self.input_name: {"shape": ["H", "W", len(self.bands)], "bands": self.bands}},
            "outputBands": {
                name: {"shape": ["H", "W"] if self.per_class else ["H", "W", len(self.classes)]}
                for name in self.output_names
            },
            "classes": self.classes,
            "payloadFormats": [SERIALIZED, NAMED_ARRAYS, ND_ARRAYS],
        }

    def predict_json(self, body: bytes, timings: dict[str, float] | None = None) -> bytes:
        """Request body -> response body; `timings` (if given) gets the seconds of each step."""
        timings = {} if timings is None else timings
        started = time.perf_counter()
        request = parse_request(body)
        if not isinstance(request, dict) or "instances" not in request:
            raise BadRequest('The request body must be a JSON object {"instances": [...]}.')
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise BadRequest('"instances" must be a non-empty list.')
        form, tiles = self.decode_instances(instances)
        decoded = time.perf_counter()
        predictions = self.predict_tiles(tiles)
        predicted = time.perf_counter()
        response = self.response_body(form, predictions)
        timings.update(
            decode=decoded - started, model=predicted - decoded, encode=time.perf_counter() - predicted
        )
        return response

    def decode_instances(self, instances: Sequence[Any]) -> tuple[str, list[np.ndarray]]:
        """The payload form shared by all instances, and each instance as float32 (H, W, bands)."""
        form = None
        tiles = []
        for i, instance in enumerate(instances):
            instance_form, tile = self._decode_instance(i, instance)
            if form is not None and instance_form != form:
                raise BadRequest(f"Instance {i} is {instance_form} but instance 0 is {form}; use one form.")
            form = instance_form
            tiles.append(tile)
        return form, tiles

    def _decode_instance(self, i: int, instance: Any) -> tuple[str, np.ndarray]:
        where = f"Instance {i}"
        if isinstance(instance, list):
            return ND_ARRAYS, self._check_tile(f"{where}", _json_array(where, instance))
        if not isinstance(instance, dict):
            raise BadRequest(
                f"{where} is a JSON {type(instance).__name__}; send an object keyed by input name "
                f'({{"{self.input_name}": ...}}) or a nested array (H, W, bands).'
            )
        if self.input_name not in instance:
            raise BadRequest(
                f"{where} lacks the input {self.input_name!r} (it has {sorted(instance)}); Earth Engine "
                f"sends it for an image made with toArray()."
            )
        extra = sorted(set(instance) - {self.input_name})
        if extra:
            raise BadRequest(f"{where} has unknown inputs {extra}; the model takes only {self.input_name!r}.")
        value = instance[self.input_name]
        where = f"{where}, input {self.input_name!r},"
        if isinstance(value, (str, memoryview)):
            try:
                tile = decode_tensor(value)
            except BadRequest as e:
                raise BadRequest(f"{where} {e}.") from None
            return SERIALIZED, self._check_tile(where, tile)
        if isinstance(value, list):
            return NAMED_ARRAYS, self._check_tile(where, _json_array(where, value))
        raise BadRequest(
            f"{where} is a JSON {type(value).__name__}; send a web-safe Base64 TensorProto string "
            "or a nested array (H, W, bands)."
        )

    def _check_tile(self, where: str, tile: np.ndarray) -> np.ndarray:
        expected = f"(H, W, {len(self.bands)}) for bands {self.bands}"
        if tile.ndim != 3:
            raise BadRequest(f"{where} has shape {tile.shape}; expected {expected}.")
        if tile.shape[2] != len(self.bands):
            raise BadRequest(f"{where} has {tile.shape[2]} bands (shape {tile.shape}); expected {expected}.")
        if tile.shape[0] == 0 or tile.shape[1] == 0:
            raise BadRequest(f"{where} is an empty tile of shape {tile.shape}.")
        return tile.astype(np.float32, copy=False)

    def predict_tiles(self, tiles: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One model call per distinct tile shape (one call in all for Earth Engine's equal tiles)."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, tile in enumerate(tiles):
            by_shape.setdefault(tile.shape, []).append(i)
        results: list[dict[str, np.ndarray]] = [{} for _ in tiles]
        needed = {source for source, _ in self._sources.values()}
        for indices in by_shape.values():
            # Stacked straight into memory TensorFlow takes without another copy (tensor_memory).
            batch = aligned_batch([tiles[i] for i in indices])
            outputs = self._predict_fn(batch)
            for source in needed:
                for row, i in enumerate(indices):
                    results[i][source] = outputs[source][row]
        return results

    def output(self, prediction: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        """The value of output band `name` in one tile's model outputs (a class's plane, per class)."""
        source, index = self._sources[name]
        value = prediction[source]
        return value if index is None else value[..., index]

    def response_body(self, form: str, predictions: Sequence[Mapping[str, np.ndarray]]) -> bytes:
        """The JSON answer `{"predictions": [...]}`, each prediction in the form it was asked in."""
        if form == SERIALIZED:
            # Base64 needs no JSON escaping: the encoded pieces are joined into the body, one copy.
            pieces: list[bytes | memoryview] = [b'{"predictions":[']
            for i, p in enumerate(predictions):
                pieces.append(b"{" if i == 0 else b",{")
                for j, name in enumerate(self.output_names):
                    pieces += [b"," if j else b"", orjson.dumps(name), b':"']
                    pieces += _encode_tensor_pieces(self.output(p, name))
                    pieces.append(b'"')
                pieces.append(b"}")
            pieces.append(b"]}")
            return b"".join(pieces)
        if form == NAMED_ARRAYS:
            answers: list[Any] = [
                {name: np.ascontiguousarray(self.output(p, name)) for name in self.output_names}
                for p in predictions
            ]
        else:  # A bare array answers a bare array: all classes, (H, W, classes).
            source = self._sources[self.output_names[0]][0]
            answers = [np.ascontiguousarray(p[source]) for p in predictions]
        return orjson.dumps({"predictions": answers}, option=orjson.OPT_SERIALIZE_NUMPY)


# JSON string literals at least this long are cut out of the body before it is parsed (see
# parse_request); Earth Engine's Base64 tiles are hundreds of kilobytes.
LONG_STRING_BYTES = 4096
_PLACEHOLDER = "\x00terrabeam-long-string-" + os.urandom(8).hex() + "-"


def parse_request(body: bytes) -> Any:
    """The request JSON, with long escape-free strings as memoryviews into `body` instead of str.

    Parsing a 1.5 MB body copies each Base64 string into a Python str (UTF-8 checked), then Base64
    decoding reads it again: the largest cost of a request besides the model. Instead, each string
    literal of at least LONG_STRING_BYTES without a backslash is cut out of the body (found with
    bytes.find, at memchr speed), a placeholder parsed in its place, and the placeholder then
    replaced by a view of the original bytes where it is the value of an instance's input. A long
    string anywhere else makes the body be parsed the ordinary way; the Base64 decoder validates the
    strings' characters (so a body is accepted only if it is valid JSON).
    """
    skeleton, strings = _cut_long_strings(body)
    try:
        request = orjson.loads(body if not strings else skeleton)
    except orjson.JSONDecodeError as e:
        if strings:
            return parse_request_plain(body)
        raise BadRequest(f"The request body is not JSON ({e}).") from None
    if not strings:
        return request
    if not _put_back(request, strings):
        return parse_request_plain(body)
    return request


def parse_request_plain(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"The request body is not JSON ({e}).") from None


def _cut_long_strings(body: bytes) -> tuple[bytes, list[memoryview]]:
    pieces: list[bytes] = []
    strings: list[memoryview] = []
    view = memoryview(body)
    copied = searched = 0
    while (start := body.find(b'"', searched)) >= 0:
        end = start
        while True:  # the closing quote: one not preceded by an odd number of backslashes
            end = body.find(b'"', end + 1)
            if end < 0:
                return body, []  # unterminated string: let the JSON parser say so
            backslashes = 0
            while body[end - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:
                break
        if end - start - 1 >= LONG_STRING_BYTES and body.find(b"\\", start, end) < 0:
            pieces.append(body[copied:start])
            pieces.append(orjson.dumps(f"{_PLACEHOLDER}{len(strings)}"))
            strings.append(view[start + 1 : end])
            copied = end + 1
        searched = end + 1
    if not strings:
        return body, []
    pieces.append(body[copied:])
    return b"".join(pieces), strings


def _put_back(request: Any, strings: list[memoryview]) -> bool:
    """Replace the placeholders that are values of instance objects; False if any is elsewhere."""
    used = 0
    instances = request.get("instances") if isinstance(request, dict) else None
    for instance in instances if isinstance(instances, list) else ():
        if not isinstance(instance, dict):
            continue
        for key, value in instance.items():
            if isinstance(value, str) and value.startswith(_PLACEHOLDER):
                index = value[len(_PLACEHOLDER) :]
                if not index.isdigit() or int(index) >= len(strings):
                    return False
                instance[key] = strings[int(index)]
                used += 1
    return used == len(strings)


def _json_array(where: str, value: list) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise BadRequest(f"{where} is not a rectangular array of numbers ({e}).") from None


# --------------------------------------------------------------------------------------------------
# HTTP.


def _json_response(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    # TensorFlow Serving's error form, which Vertex AI passes through to the caller.
    return _json_response({"error": message}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number.") from None
        if declared_bytes > limit:
            raise BadRequest(_too_large(declared_bytes, limit), 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(_too_large(size, limit), 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (
        f"The request body ({size} bytes or more) exceeds the server's limit of {limit} bytes. Send fewer "
        "or smaller tiles per request (Earth Engine: lower maxPayloadBytes or inputTileSize), or start "
        "the server with a larger --max-request-bytes."
    )


def default_max_request_bytes(predictor: Predictor | None) -> int:
    """Earth Engine's maxPayloadBytes for this model (earthengine.json) plus the JSON envelope."""
    from model.export import VERTEX_AI_MAX_REQUEST_BYTES

    payload = (predictor.max_payload_bytes if predictor else None) or VERTEX_AI_MAX_REQUEST_BYTES
    return max(payload, VERTEX_AI_MAX_REQUEST_BYTES) + ENVELOPE_BYTES


def create_app(
    load: Callable[[], Predictor],
    *,
    health_route: str = DEFAULT_HEALTH_ROUTE,
    predict_route: str = DEFAULT_PREDICT_ROUTE,
    max_request_bytes: int | None = None,
    threads: int = DEFAULT_THREADS,
    on_load_error: Callable[[Exception], None] | None = None,
) -> Starlette:
    """The ASGI app. `load()` runs on a thread once the server listens; health says 503 until it returns.

    `max_request_bytes` defaults to `default_max_request_bytes(predictor)`.
    """
    state: dict[str, Any] = {"predictor": None, "error": None, "limit": max_request_bytes}
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")

    def load_in_background() -> None:
        started = time.perf_counter()
        try:
            predictor = load()
        except Exception as e:  # reported on the health route and to on_load_error
            state["error"] = f"{e.__class__.__name__}: {e}"
            logger.error("Loading the model failed: %s", state["error"])
            if on_load_error is not None:
                on_load_error(e)
            return
        if state["limit"] is None:
            state["limit"] = default_max_request_bytes(predictor)
        state["predictor"] = predictor
        logger.info(
            "Model %s loaded in %.1f s; predictions at %s, health at %s, requests up to %d bytes.",
            predictor.source or "(in memory)",
            time.perf_counter() - started,
            predict_route,
            health_route,
            state["limit"],
        )

    async def health(request: Request) -> Response:
        predictor = state["predictor"]
        if predictor is not None:
            return _json_response({**predictor.describe(), "maxRequestBytes": state["limit"]})
        if state["error"] is not None:
            return _json_response({"status": "failed", "error": state["error"]}, 503)
        return _json_response({"status": "loading"}, 503)

    async def predict(request: Request) -> Response:
        predictor = state["predictor"]
        if predictor is None:
            return _error(
                "The model is not loaded yet." if state["error"] is None else state["error"],
                503,
            )
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def handle(body: bytes) -> bytes:
            timings["queue"] = time.perf_counter() - started - timings["read"]
            return predictor.predict_json(body, timings)

        try:
            body = await _read_body(request, state["limit"])
            timings["read"] = time.perf_counter() - started
            result = await asyncio.get_running_loop().run_in_executor(executor, handle, body)
        except BadRequest as e:
            return _error(str(e), e.status)
        except Exception as e:  # one failed request must not stop the server
            logger.exception("Prediction failed")
            return _error(f"Prediction failed: {e.__class__.__name__}: {e}", 500)
        timings["total"] = time.perf_counter() - started
        # Where the time went (milliseconds), for clients and load tests; the rest of `total` is spent
        # handing the request to a prediction thread and back.
        server_timing = ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in timings.items())
        return Response(result, media_type="application/json", headers={"server-timing": server_timing})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        loader = threading.Thread(target=load_in_background, name="load-model", daemon=True)
        loader.start()
        try:
            yield
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            logger.info("Prediction server stopped.")

    routes = [Route(health_route, health, methods=["GET"]), Route(predict_route, predict, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def uvicorn_config(app: Starlette, *, host: str, port: int, access_log: bool = False, **options: Any):
    options.setdefault("limit_concurrency", DEFAULT_MAX_CONCURRENT_REQUESTS)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=access_log,
        log_level="info" if access_log else "warning",
        timeout_graceful_shutdown=30,
        **options,
    )


@contextlib.contextmanager
def running_server(app: Starlette, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Iterator[str]:
    """Serve `app` from a thread for the duration of the block; yields its base URL.

    Binds before serving, so `port=0` takes a free port. For tests and benchmarks.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn_config(app, host=host, port=sock.getsockname()[1], **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The prediction server did not start.")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until_ready(url: str, health_route: str = DEFAULT_HEALTH_ROUTE, timeout: float = 120) -> dict:
    """Poll the health route until it answers 200 (or raise after `timeout` seconds)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url + health_route, timeout=5)
            if response.status_code == 200:
                return response.json()
            if response.json().get("status") == "failed":
                raise RuntimeError(f"The model failed to load: {response.json().get('error')}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}{health_route} was not ready within {timeout} s.")
        time.sleep(0.05)


def serve_until_stopped(
    model_dir: str,
    *,
    host: str,
    port: int,
    health_route: str = DEFAULT_HEALTH_ROUTE,
    predict_route: str = DEFAULT_PREDICT_ROUTE,
    max_request_bytes: int | None = None,
    threads: int = DEFAULT_THREADS,
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
    access_log: bool = False,
) -> Exception | None:
    """Serve the model folder until the process is told to stop (SIGINT/SIGTERM) or the model fails to
    load; returns that failure, or None."""
    failed: list[Exception] = []
    server: uvicorn.Server | None = None

    def stop(error: Exception) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(
        lambda: Predictor.load(model_dir),
        health_route=health_route,
        predict_route=predict_route,
        max_request_bytes=max_request_bytes,
        threads=threads,
        on_load_error=stop,
    )
    server = uvicorn.Server(
        uvicorn_config(
            app, host=host, port=port, access_log=access_log, limit_concurrency=max_concurrent_requests
        )
    )
    server.run()
    return failed[0] if failed else None
