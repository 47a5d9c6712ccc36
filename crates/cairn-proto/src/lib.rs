//! gRPC wire types (tonic/prost) and their conversions to domain types.
