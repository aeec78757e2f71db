"""The Open Inference Protocol (KServe v2) over REST: request parsing and response encoding.

JSON tensors may be flat or nested (row-major). Triton's binary tensor data extension is
supported both ways, so ``tritonclient.http`` works with its defaults: a request whose JSON
header is followed by raw tensor bytes (``Inference-Header-Content-Length``), and outputs sent
as raw bytes when asked for with ``binary_data`` / ``binary_data_output``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nlpforge.serving.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"

#: v2 datatype → numpy dtype (BYTES tensors are lists of str).
DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
_NUMPY_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}  # target kind → accepted JSON kinds
#: Bounds of a tensor's shape: dimensions, and elements (the product of the dimensions
#: other than 0, so that an empty tensor cannot declare an impossible size either).
MAX_RANK = 8
MAX_ELEMENTS = 2 ** 31 - 1
#: Longest client-given string that an error message repeats.
CLIENT_TEXT = 64
#: Longest error message sent back; a longer one keeps its start and end.
MAX_MESSAGE = 1024


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of a numpy array (strings and objects are BYTES)."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype and name != "BYTES":
            return name
    return "BYTES"


# -- JSON shapes (also the OpenAPI document) -------------------------------------------------

Parameters = dict[str, Any]  # values: string, number or boolean (checked by check_parameters)


class RequestInput(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    shape: list[int] = Field(description="dimensions; their product is the number of elements")
    datatype: str = Field(description="BYTES for text, INT64 for token ids, FP32, BOOL, ...")
    parameters: Optional[Parameters] = None
    data: Optional[list[Any]] = Field(None, description="flat or nested, row-major")


class RequestOutput(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str
    parameters: Optional[Parameters] = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer``: text as BYTES, or token ids as INT64."""

    model_config = ConfigDict(strict=True, json_schema_extra={"examples": [{
        "id": "42",
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                    "data": ["what a lovely film", "the food was cold"]}],
        "outputs": [{"name": "label"}, {"name": "score"}],
    }]})
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: Optional[list[RequestOutput]] = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[Parameters] = None
    data: Optional[list[Any]] = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    parameters: Optional[Parameters] = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for a variable dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Optional[Parameters] = None


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str


def clip(text: Any, limit: int = CLIENT_TEXT) -> str:
    """A client-given string (or another value's repr) as an error message repeats it: at
    most ``limit`` characters, ending with '…' when cut."""
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + "…"


def clip_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """An error message of at most about ``limit`` characters: its start and its end."""
    if len(message) <= limit:
        return message
    head, tail = message[:limit * 3 // 4], message[-(limit // 4):]
    return f"{head} … [{len(message) - len(head) - len(tail)} characters left out] … {tail}"


def field_path(loc: Sequence[Any]) -> str:
    """``("inputs", 0, "shape")`` → ``inputs[0].shape`` (names clipped: they may be the
    client's)."""
    path = ""
    for part in loc:
        part = part if isinstance(part, int) else clip(str(part))
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def validate_json(model: type[BaseModel], raw: bytes | str) -> Any:
    """Parse and check a JSON body; a failure is a 400 naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] == "json_invalid":
            raise BadRequest(f"the request body is not valid JSON: {error['msg']}")
        where = field_path(error["loc"]) or "request body"
        raise BadRequest(f"field '{where}': {error['msg']}")


def check_parameters(parameters: dict | None, where: str) -> dict:
    """v2 parameters are name → string, number or boolean."""
    for name, value in (parameters or {}).items():
        if not isinstance(value, (str, int, float, bool)):
            raise BadRequest(f"field '{where}.{clip(name)}': a parameter is a string, number or "
                             f"boolean, got {type(value).__name__}")
    return parameters or {}


# -- requests ---------------------------------------------------------------------------------

@dataclass
class Tensor:
    """One tensor of the wire format, input or output: ``data`` is a numpy array of ``shape``,
    or a flat list of str for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    #: The request field an input came from, for error messages ("" for outputs).
    where: str = ""

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> "Tensor":
        return cls(name, datatype_of(array), tuple(array.shape), array)

    def as_json(self) -> list:
        if self.datatype == "BYTES":
            return list(self.data)
        return np.asarray(self.data).reshape(-1).tolist()

    def as_bytes(self) -> bytes:
        if self.datatype == "BYTES":
            return b"".join(struct.pack("<I", len(b)) + b
                            for b in (s.encode("utf-8") for s in self.data))
        dtype = np.dtype(DATATYPES[self.datatype]).newbyteorder("<")
        return np.ascontiguousarray(self.data, dtype=dtype).tobytes()


@dataclass
class InferRequest:
    id: str | None
    parameters: dict
    inputs: list[Tensor]
    outputs: list[tuple[str, bool]] | None  # requested (name, as binary); None: all outputs
    binary_outputs: bool  # the default for outputs not named in ``outputs``


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an infer request body (JSON, or JSON header + binary tensors)."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise BadRequest(f"header '{HEADER_LENGTH}': expected the JSON header's byte "
                             f"count (0 to {len(body)}), got {clip(header_length)!r}")
        body, binary = body[:size], body[size:]
    request = validate_json(InferenceRequest, body)
    parameters = check_parameters(request.parameters, "parameters")
    tensors, offset, seen = [], 0, set()
    for i, item in enumerate(request.inputs):
        where = f"inputs[{i}]"
        if item.name in seen:
            raise BadRequest(f"field '{where}.name': input {clip(item.name)!r} is given twice")
        seen.add(item.name)
        if item.datatype not in DATATYPES:
            raise BadRequest(f"field '{where}.datatype': unknown datatype "
                             f"{clip(item.datatype)!r} (one of {', '.join(DATATYPES)})")
        check_shape(item.shape, where)
        item_parameters = check_parameters(item.parameters, f"{where}.parameters")
        size = item_parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not \
                    0 <= size <= len(binary) - offset:
                raise BadRequest(f"field '{where}.parameters.binary_data_size': "
                                 f"{clip(repr(size))} does not fit the {len(binary) - offset} "
                                 f"binary bytes left")
            data = _decode_binary(binary[offset:offset + size], item.datatype, item.shape, where)
            offset += size
        elif item.data is None:
            raise BadRequest(f"field '{where}.data': missing (or give "
                             f"parameters.binary_data_size with binary data)")
        else:
            data = _decode_json(item.data, item.datatype, item.shape, where)
        tensors.append(Tensor(item.name, item.datatype, tuple(item.shape), data, where))
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no "
                         f"input claims (inputs[i].parameters.binary_data_size)")
    default_binary = parameters.get("binary_data_output") is True
    outputs = None
    if request.outputs is not None:
        outputs = []
        for i, out in enumerate(request.outputs):
            out_parameters = check_parameters(out.parameters, f"outputs[{i}].parameters")
            if "classification" in out_parameters:
                raise BadRequest(f"field 'outputs[{i}].parameters.classification': the "
                                 f"classification extension is not supported")
            outputs.append((out.name, out_parameters.get("binary_data", default_binary) is True))
    return InferRequest(request.id, parameters, tensors, outputs, default_binary)


def check_shape(shape: Sequence[int], where: str) -> None:
    """400 unless ``shape`` has at most MAX_RANK dimensions, none negative, whose non-zero
    ones multiply to at most MAX_ELEMENTS."""
    if len(shape) > MAX_RANK:
        raise BadRequest(f"field '{where}.shape': {len(shape)} dimensions; at most {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"field '{where}.shape': dimensions cannot be negative")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise BadRequest(f"field '{where}.shape': {list(shape)} is over the limit of "
                         f"{MAX_ELEMENTS} elements (dimensions of 0 aside)")


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flatten(data: list) -> list:
    flat: list = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _decode_json(data: list, datatype: str, shape: Sequence[int], where: str) -> Any:
    if datatype == "BYTES":
        flat = _flatten(data)
        for j, value in enumerate(flat):
            if not isinstance(value, str):
                raise BadRequest(f"field '{where}.data[{j}]': BYTES elements are strings, "
                                 f"got {type(value).__name__}")
        _check_count(len(flat), shape, where)
        return flat
    dtype = np.dtype(DATATYPES[datatype])
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError):
        raise BadRequest(f"field '{where}.data': nested lists of unequal length")
    _check_count(array.size, shape, where)
    if array.size == 0:
        return np.zeros(shape, dtype=dtype)
    if array.dtype.kind not in _NUMPY_KINDS[dtype.kind]:
        kind = {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}[dtype.kind]
        raise BadRequest(f"field '{where}.data': {datatype} elements are {kind}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"field '{where}.data': a value is out of the {datatype} range")
    return array.astype(dtype).reshape(shape)


def _decode_binary(raw: bytes, datatype: str, shape: Sequence[int], where: str) -> Any:
    if datatype != "BYTES":
        dtype = np.dtype(DATATYPES[datatype])
        if len(raw) != _count(shape) * dtype.itemsize:
            raise BadRequest(f"field '{where}.parameters.binary_data_size': {len(raw)} bytes "
                             f"do not hold a {datatype} tensor of shape {list(shape)}")
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"field '{where}': truncated BYTES element length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise BadRequest(f"field '{where}': a BYTES element runs past the binary data")
        try:
            items.append(raw[offset:offset + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"field '{where}': element {len(items)} is not UTF-8 text")
        offset += size
    _check_count(len(items), shape, where)
    return items


def _check_count(count: int, shape: Sequence[int], where: str) -> None:
    if count != _count(shape):
        raise BadRequest(f"field '{where}.data': {count} elements do not fill shape "
                         f"{list(shape)} ({_count(shape)} elements)")


# -- responses --------------------------------------------------------------------------------

def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: Sequence[tuple[Tensor, bool]]) -> tuple[bytes, dict]:
    """The response body and headers; outputs flagged binary go after the JSON header."""
    entries, blobs = [], []
    for tensor, binary in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape)}
        if binary:
            blob = tensor.as_bytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.as_json()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = entries
    head = json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    HEADER_LENGTH: str(len(head))}
