//! Test harness shared by the interop tests (being written; see issue 4).
