"""The gRPC adapter: one interceptor for the rules every call shares (vault.rpc.interceptor) and
thin servicers that translate protobuf to the protobuf-free core and back (vault.rpc.servicers)."""
