"""Generated from proto/driftloop/v1 by grpcio-tools. Do not edit the *_pb2 modules by hand."""
