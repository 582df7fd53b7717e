//! Timestamp normalization for ingest (being built).
