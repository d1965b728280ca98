"""The Open Inference Protocol on the router's port, as a KServe/Triton client sends it
(one tensor per feature, raw little-endian contents, BYTES with 4-byte length prefixes).
tritonclient itself is not run here yet (it pins protobuf < 7; see the README)."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.v1 import open_inference_pb2 as oip
from driftloop.v1 import open_inference_pb2_grpc as oip_grpc
from services.router.open_inference import decode_bytes_tensor, encode_bytes_tensor
from tests.integration.router.conftest import MODEL, RunningRouter, Served
from tests.integration.router.helpers import CATEGORICAL, NUMERIC, complete_rows


async def test_model_infer_with_raw_tensors_matches_the_model(
    served: Served, router: RunningRouter
) -> None:
    stub = oip_grpc.GRPCInferenceServiceStub(router.channel)
    assert (await stub.ServerLive(oip.ServerLiveRequest())).live
    assert (await stub.ModelReady(oip.ModelReadyRequest(name=MODEL))).ready
    meta = await stub.ModelMetadata(oip.ModelMetadataRequest(name=MODEL))
    assert {t.name for t in meta.inputs} >= set(NUMERIC) | set(CATEGORICAL)
    rows = complete_rows(served.online, 8)
    t = oip.ModelInferRequest.InferInputTensor
    inputs, raw = [], []
    for name in NUMERIC:
        inputs.append(t(name=name, datatype="FP32", shape=[len(rows), 1]))
        raw.append(np.asarray([r[name] for r in rows], dtype="<f4").tobytes())
    for name in CATEGORICAL:
        inputs.append(t(name=name, datatype="BYTES", shape=[len(rows)]))
        raw.append(encode_bytes_tensor([r[name].encode() for r in rows]))
    reply = await stub.ModelInfer(
        oip.ModelInferRequest(model_name=MODEL, id="oip-1", inputs=inputs, raw_input_contents=raw)
    )
    scores = np.frombuffer(reply.raw_output_contents[0], dtype="<f8")
    columns = {
        n: [np.float32(r[n]).item() if n in NUMERIC else r[n] for r in rows] for n in rows[0]
    }
    assert scores.tolist() == pytest.approx(served.models[1].score(columns).tolist(), rel=1e-5)
    assert decode_bytes_tensor(reply.raw_output_contents[1]) == [b"champion"] * len(rows)
    assert [o.name for o in reply.outputs] == ["score", "variant"]
