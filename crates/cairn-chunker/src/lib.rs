//! Content-defined chunking, hashing and compression of file content.
