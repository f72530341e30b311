//! Shared pieces of the launcher binaries.
