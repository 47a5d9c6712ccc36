//! The backup and restore engines a host runs against the cluster.
