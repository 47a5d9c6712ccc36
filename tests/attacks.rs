//! The attacks of a compromised host, end to end (written next).
