"""The router as users call it with grpcurl: no .proto file, everything through server
reflection (grpcurl is a Go program, installed by scripts/bootstrap.sh and put on PATH by
scripts/venv; this test fails, never skips, without it)."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import pytest

from services.common.settings import Settings
from services.router.serving_port import ServingPort
from tests.integration.router.conftest import MODEL, Served, running_router
from tests.integration.router.helpers import CATEGORICAL, NUMERIC, complete_rows

TOKEN = "grpcurl-s3cret"
SERVICE = "driftloop.v1.PredictionService"
# grpcurl exits with 64 + the gRPC status code when the call fails
INVALID_ARGUMENT_EXIT = 64 + 3
UNAUTHENTICATED_EXIT = 64 + 16


async def grpcurl(*args: str, data: dict[str, Any] | None = None) -> tuple[int, str, str]:
    """Runs grpcurl as a subprocess (asynchronously: the router serves from this event loop)."""
    exe = shutil.which("grpcurl")
    assert exe, "grpcurl is not on PATH: run scripts/bootstrap.sh (needs Go) or use scripts/venv"
    argv = [exe, "-plaintext", "-max-time", "30"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    process = await asyncio.create_subprocess_exec(
        *argv, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_grpcurl_lists_calls_and_gets_field_errors_through_reflection(
    served: Served, serving: ServingPort, stack: Settings, tmp_path: Any
) -> None:
    async with running_router(
        stack, serving, tmp_path, router_replica="grpcurl", router_auth_token=TOKEN
    ) as router:
        # reflection stays open without the token (probes and discovery)
        code, out, err = await grpcurl(router.target, "list")
        assert code == 0, err
        assert {
            SERVICE,
            "inference.GRPCInferenceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= set(out.split())
        code, out, err = await grpcurl(router.target, "describe", SERVICE)
        assert code == 0, err
        assert "rpc Predict ( .driftloop.v1.PredictRequest )" in out
        # a method symbol too (grpcio-reflection alone answers NOT_FOUND: grpc/grpc#34743)
        for method, rpc in (
            (f"{SERVICE}.Predict", "rpc Predict ( .driftloop.v1.PredictRequest )"),
            ("inference.GRPCInferenceService.ModelInfer", "rpc ModelInfer ("),
        ):
            code, out, err = await grpcurl(router.target, "describe", method)
            assert code == 0, err
            assert f"{method} is a method:" in out and rpc in out, out
        code, out, err = await grpcurl(router.target, "describe", f"{SERVICE}.NoSuchMethod")
        assert code != 0 and "not found" in err.lower(), (out, err)
        code, out, err = await grpcurl(router.target, "describe", "driftloop.v1.PredictRequest")
        assert code == 0, err
        assert "map<string, double> numeric" in out

        row = complete_rows(served.online, 1)[0]
        request = {
            "model": MODEL,
            "request_id": "grpcurl-1",
            "numeric": {n: float(row[n]) for n in NUMERIC},
            "categorical": {n: row[n] for n in CATEGORICAL},
        }
        champion = served.models[1].score({n: [v] for n, v in row.items()})  # version 1
        auth = ("-H", f"authorization: Bearer {TOKEN}")
        code, out, err = await grpcurl(*auth, router.target, f"{SERVICE}/Predict", data=request)
        assert code == 0, err
        reply = json.loads(out)  # grpcurl prints JSON with the .proto field names
        assert reply["score"] == pytest.approx(float(champion[0]), rel=1e-5)
        assert (reply["variant"], reply["version"], reply["request_id"]) == (
            "champion",
            "1",
            "grpcurl-1",
        )

        code, _, err = await grpcurl(router.target, f"{SERVICE}/Predict", data=request)
        assert code == UNAUTHENTICATED_EXIT, err

        bad = {"model": MODEL, "numeric": {"region": 1.0}}  # a categorical sent as a number
        code, _, err = await grpcurl(
            *auth, "-format-error", router.target, f"{SERVICE}/Predict", data=bad
        )
        assert code == INVALID_ARGUMENT_EXIT, err
        status = json.loads(err)  # the google.rpc.Status, as JSON on stderr
        assert status["code"] == 3  # INVALID_ARGUMENT
        details = status["details"]
        assert [d["@type"] for d in details] == ["type.googleapis.com/google.rpc.BadRequest"]
        fields = [v["field"] for d in details for v in d["field_violations"]]
        assert "numeric[region]" in fields
