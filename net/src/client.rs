//! The async client library (being written).
