//! Reading and recreating file-system objects with full metadata, safely.
