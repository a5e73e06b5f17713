"""gRPC server reflection in both protocol versions: v1 (what current grpcurl, Postman and
grpcui ask for first) and v1alpha (older tools).

grpcio-reflection 1.85 implements only v1alpha. The v1 protocol is the v1alpha proto promoted
unchanged (same messages, same field numbers), so v1alpha's servicer answers v1 calls too: it is
registered a second time under the v1 service name with the same wire messages.
"""

from __future__ import annotations

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as messages
from grpc_reflection.v1alpha import reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Serve reflection for `service_names` (and for itself) under v1 and v1alpha."""
    servicer = reflection.aio.ReflectionServicer((*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(servicer.ServerReflectionInfo,
                                               request_deserializer=messages.ServerReflectionRequest.FromString,
                                               response_serializer=messages.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE_NAME,
                                                                          {"ServerReflectionInfo": v1}),))
