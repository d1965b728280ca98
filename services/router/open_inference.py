"""The Open Inference Protocol (KServe V2 / Triton gRPC) on the router's port.

A model's inputs are one tensor per feature, named as the feature: numeric ones FP32/FP64
(or an integer type), categorical ones BYTES, each of shape [n] or [n, 1]; an optional
BYTES tensor `entity_key` lets a request leave features out (filled from the online
store). Data may come in `contents` or in `raw_input_contents` (tritonclient's default).
Outputs: `score` (FP64 [n]) and `variant` (BYTES [n]), both as raw contents. A request
goes through the same routing as PredictBatch: assignment, shadow, fallback, logging.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from driftloop.v1 import open_inference_pb2 as oip
from driftloop.v1 import open_inference_pb2_grpc as oip_grpc
from services.router.errors import status_for
from services.router.features import FeatureFrame, ModelContract
from services.router.grpc_api import deadline_of, request_span
from services.router.routing import Router
from services.router.validation import InvalidRequest, NotFound, Violation

__all__ = ["InferenceServicer", "decode_bytes_tensor", "encode_bytes_tensor"]

ENTITY_KEY = "entity_key"
_NUMERIC: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """Triton's raw BYTES layout: each element a 4-byte little-endian length, then it."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ValueError("truncated BYTES tensor")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise ValueError("truncated BYTES tensor")
        out.append(raw[pos : pos + n])
        pos += n
    return out


def encode_bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, router: Router, max_batch_rows: int, ready: Callable[[str], bool]) -> None:
        self._router = router
        self._max_rows = max_batch_rows
        self._ready = ready

    async def ServerLive(
        self, request: oip.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: oip.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="driftloop", version="1", extensions=[])

    async def ModelReady(
        self, request: oip.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelReadyResponse:
        try:
            self._router.contract(request.name)
        except NotFound:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=self._ready(request.name))

    async def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelMetadataResponse:
        try:
            contract = self._router.contract(request.name)
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                raise
            await context.abort_with_status(status)
        tm = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=contract.model,
            versions=[str(contract.version)],
            platform="driftloop",
            inputs=[tm(name=n, datatype="FP64", shape=[-1]) for n in contract.numeric]
            + [tm(name=n, datatype="BYTES", shape=[-1]) for n in contract.categorical]
            + [tm(name=ENTITY_KEY, datatype="BYTES", shape=[-1])],
            outputs=[
                tm(name="score", datatype="FP64", shape=[-1]),
                tm(name="variant", datatype="BYTES", shape=[-1]),
            ],
        )

    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelInferResponse:
        with request_span("inference.GRPCInferenceService/ModelInfer", context):
            return await self._infer(request, context)

    async def _infer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> oip.ModelInferResponse:
        try:
            contract = self._router.contract(request.model_name)
            frame, keys = self._frame(request, contract)
            ids = [f"{request.id}-{i}" if request.id else "" for i in range(frame.rows)]
            out = await self._router.predict(contract, frame, keys, ids, deadline_of(context))
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                raise
            await context.abort_with_status(status)
        n = frame.rows
        t = oip.ModelInferResponse.InferOutputTensor
        return oip.ModelInferResponse(
            model_name=contract.model,
            model_version=str(out.versions[0]),
            id=request.id,
            outputs=[
                t(name="score", datatype="FP64", shape=[n]),
                t(name="variant", datatype="BYTES", shape=[n]),
            ],
            raw_output_contents=[
                np.asarray(out.scores, dtype="<f8").tobytes(),
                encode_bytes_tensor([v.encode() for v in out.variants]),
            ],
        )

    def _frame(
        self, request: oip.ModelInferRequest, contract: ModelContract
    ) -> tuple[FeatureFrame, list[str]]:
        problems: list[Violation] = []
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequest(
                [("raw_input_contents", f"{len(raw)} buffers for {len(request.inputs)} inputs")]
            )
        columns: dict[str, np.ndarray | list[str]] = {}
        rows: int | None = None
        for j, tensor in enumerate(request.inputs):
            where = f"inputs[{j}] ({tensor.name})"
            shape = list(tensor.shape)
            if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
                problems.append((where, f"shape must be [n] or [n, 1], got {shape}"))
                continue
            n = int(shape[0])
            if rows is None:
                rows = n
            elif n != rows:
                problems.append((where, f"has {n} rows, the first input has {rows}"))
                continue
            try:
                values = _tensor_values(tensor, raw[j] if raw else None)
            except ValueError as exc:
                problems.append((where, str(exc)))
                continue
            if len(values) != n:
                problems.append((where, f"has {len(values)} elements for shape {shape}"))
                continue
            columns[tensor.name] = values
        if rows is None and not problems:
            problems.append(("inputs", "at least one input tensor is required"))
        if problems:
            raise InvalidRequest(problems)
        assert rows is not None
        if rows <= 0 or rows > self._max_rows:
            raise InvalidRequest([("inputs", f"rows must be in [1, {self._max_rows}], got {rows}")])
        keys_col = columns.pop(ENTITY_KEY, None)
        keys = [str(k) for k in keys_col] if keys_col is not None else []
        frame = FeatureFrame.empty(contract, rows)
        for name, values in columns.items():
            if name in frame.numeric:
                if not isinstance(values, np.ndarray):
                    problems.append((name, "is numeric: send FP32/FP64 or an integer type"))
                    continue
                col = values.astype(np.float64)
                if np.isinf(col).any():
                    problems.append((name, "must be finite (NaN means missing)"))
                frame.numeric[name] = col
            elif name in frame.categorical:
                if isinstance(values, np.ndarray):
                    problems.append((name, "is categorical: send BYTES"))
                    continue
                frame.categorical[name] = [v or None for v in values]
            else:
                problems.append(
                    (
                        name,
                        f"model {contract.model!r} has no feature {name!r} "
                        f"(it takes {list(contract.names)})",
                    )
                )
        if problems:
            raise InvalidRequest(problems)
        return frame, keys


def _tensor_values(
    tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray | list[str]:
    dt = tensor.datatype
    if dt == "BYTES":
        items = (
            decode_bytes_tensor(raw) if raw is not None else list(tensor.contents.bytes_contents)
        )
        try:
            return [b.decode() for b in items]
        except UnicodeDecodeError as exc:
            raise ValueError(f"BYTES elements must be UTF-8: {exc}") from None
    if dt not in _NUMERIC:
        raise ValueError(f"unsupported datatype {dt!r}")
    if raw is not None:
        if len(raw) % _NUMERIC[dt].itemsize:
            raise ValueError(f"{len(raw)} bytes is not a whole number of {dt} elements")
        return np.frombuffer(raw, dtype=_NUMERIC[dt])
    if dt not in _CONTENTS:
        raise ValueError(f"{dt} must be sent in raw_input_contents")
    return np.asarray(getattr(tensor.contents, _CONTENTS[dt]), dtype=_NUMERIC[dt])
