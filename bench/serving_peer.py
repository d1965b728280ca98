"""The peer `bench.serving` compares driftloop against: what an engineer would write
instead — a plain `grpc.aio` server with a small asyncio batcher calling the model in
process. Same proto, same model, same encoder and scoring code (`Servable`) as serving.

    python -m bench.serving_peer --home H --model M --port P [--no-batching]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from driftloop.v1 import prediction_pb2 as pb
from driftloop.v1 import prediction_pb2_grpc as pb_grpc
from services.common.artifacts import ArtifactStore
from services.common.settings import load_settings
from services.serving.servable import Columns, Rejected, Reply, Servable

__all__ = ["Batcher", "PeerServicer", "main"]


class Batcher:
    """Requests queue up; one task takes whatever is queued (up to `max_rows` requests,
    waiting at most `wait_s` for more) and scores it in one call."""

    def __init__(self, servable: Servable, max_rows: int = 64, wait_s: float = 0.002) -> None:
        self._servable, self._max_rows, self._wait_s = servable, max_rows, wait_s
        self._queue: asyncio.Queue[tuple[Columns, asyncio.Future[Reply]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def score(self, columns: Columns) -> Reply:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        await self._queue.put((columns, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._wait_s
            while len(batch) < self._max_rows:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            replies = self._servable.score([columns for columns, _ in batch])
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)


class PeerServicer(pb_grpc.PredictionServiceServicer):
    def __init__(self, servable: Servable, batcher: Batcher | None) -> None:
        self._servable, self._batcher = servable, batcher

    async def _score(self, columns: Columns) -> Reply:
        if self._batcher is not None:
            return await self._batcher.score(columns)
        return self._servable.score([columns])[0]

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        columns: dict[str, Any] = {k: [v] for k, v in request.numeric.items()}
        columns.update({k: [v] for k, v in request.categorical.items()})
        reply = await self._score(columns)
        if isinstance(reply, Rejected):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(reply.problems))
        return pb.PredictResponse(
            request_id=request.request_id,
            score=float(reply.scores[0]),  # type: ignore[union-attr]
            model=request.model,
            version=str(self._servable.version),
            variant="champion",
        )

    async def PredictBatch(
        self, request: pb.PredictBatchRequest, context: Any
    ) -> pb.PredictBatchResponse:
        rows = request.rows
        values = np.asarray(request.values, dtype=np.float64).reshape(rows, -1)
        columns: dict[str, Any] = {
            name: values[:, j] for j, name in enumerate(request.feature_names)
        }
        if request.categorical_names:
            cats = np.asarray(request.categorical_values, dtype=object).reshape(rows, -1)
            for j, name in enumerate(request.categorical_names):
                columns[name] = [v or None for v in cats[:, j]]
        reply = self._servable.score([columns])[0]  # already a batch: no batcher
        if isinstance(reply, Rejected):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(reply.problems))
        scores = reply.scores  # type: ignore[union-attr]
        return pb.PredictBatchResponse(
            model=request.model,
            scores=scores.tolist(),
            versions=[str(self._servable.version)] * rows,
            variants=["champion"] * rows,
        )


async def serve(home: str, model: str, port: int, batching: bool) -> None:
    from services.common.registry import ModelRegistry

    settings = load_settings(home=home)
    registry = ModelRegistry(ArtifactStore.from_settings(settings))
    servable = Servable.load(registry, model, registry.resolve(model, "champion"))
    servable.warm_up(3, 64)
    batcher = Batcher(servable) if batching else None
    if batcher is not None:
        batcher.start()
    server = grpc.aio.server()
    pb_grpc.add_PredictionServiceServicer_to_server(PeerServicer(servable, batcher), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"peer listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_peer", description=__doc__)
    parser.add_argument("--home", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-batching", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.home, args.model, args.port, not args.no_batching))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
