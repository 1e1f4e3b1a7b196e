"""Generated protobuf and gRPC modules for the Viam wire API and rover-safety's own service."""
