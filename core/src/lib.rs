//! mender-connect-core: the sans-IO protocol core (being written; see issue 2).
#![no_std]
#![forbid(unsafe_code)]
