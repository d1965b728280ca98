"""Server reflection (grpcio-reflection) that also resolves a method's name.

`grpcurl describe driftloop.v1.PredictionService.Predict` asks for the file containing the
symbol `….PredictionService.Predict`; grpcio-reflection looks it up with
`DescriptorPool.FindFileContainingSymbol`, which knows messages, enums, services and
fields but not methods, and answers NOT_FOUND (upstream grpc/grpc#34743). Here a name
that is not found and is a method of a known service answers with that service's file,
which is what the reflection protocol asks for (the file that defines the symbol).
"""

from __future__ import annotations

import grpc.aio
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as pb

__all__ = ["ReflectionServicer", "enable_reflection"]


class ReflectionServicer(reflection.aio.ReflectionServicer):
    def _file_containing_symbol(
        self, request: pb.ServerReflectionRequest, fully_qualified_name: str
    ) -> pb.ServerReflectionResponse:
        service, _, method = fully_qualified_name.rpartition(".")
        if service and method:
            try:
                self._pool.FindFileContainingSymbol(fully_qualified_name)
            except KeyError:
                try:
                    found = self._pool.FindServiceByName(service).FindMethodByName(method)
                except KeyError:
                    found = None
                if found is not None:
                    return super()._file_containing_symbol(request, service)
        return super()._file_containing_symbol(request, fully_qualified_name)


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """`reflection.enable_server_reflection` for an aio server, with methods resolved."""
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        ReflectionServicer(service_names), server
    )
