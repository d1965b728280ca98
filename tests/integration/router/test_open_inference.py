"""The Open Inference Protocol on the router's port, as a KServe/Triton client sends it
(one tensor per feature, raw little-endian contents, BYTES with 4-byte length prefixes).
and an unchanged tritonclient, run from its own small venv (it pins protobuf < 7)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

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


def _tritonclient_python() -> Path:
    """A small venv with tritonclient[grpc] under $DRIFTLOOP_CACHE (it pins protobuf < 7,
    the project uses 7), created once with the bootstrap's uv."""
    cache = Path(os.environ.get("DRIFTLOOP_CACHE", Path.home() / ".cache" / "driftloop"))
    venv = cache / "tritonclient-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import tritonclient.grpc"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv") or next(iter(sorted(cache.glob("uv-*/bin/uv"))), None)
    assert uv, "uv not found (scripts/bootstrap.sh installs it under $DRIFTLOOP_CACHE)"
    subprocess.run([str(uv), "venv", "-q", "--python", "3.11", str(venv)], check=True)
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(python), "tritonclient[grpc]"],
        check=True,
    )
    return python


async def test_unchanged_tritonclient_calls_model_infer(
    served: Served, router: RunningRouter
) -> None:
    python = await asyncio.to_thread(_tritonclient_python)
    rows = complete_rows(served.online, 6)
    script = Path(__file__).with_name("tritonclient_call.py")
    # a child process, awaited without blocking the loop the in-process router answers on
    child = await asyncio.create_subprocess_exec(
        str(python),
        str(script),
        router.target,
        MODEL,
        json.dumps(rows),
        json.dumps(NUMERIC),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == 0, stderr.decode()
    out = json.loads(stdout)
    columns = {
        n: [np.float32(r[n]).item() if n in NUMERIC else r[n] for r in rows] for n in rows[0]
    }
    assert out["scores"] == pytest.approx(served.models[1].score(columns).tolist(), rel=1e-5)
    assert out["variants"] == ["champion"] * len(rows)
