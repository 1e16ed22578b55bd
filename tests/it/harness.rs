//! Test harness (todo)
