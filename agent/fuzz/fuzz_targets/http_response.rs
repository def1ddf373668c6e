//! Fuzzes the standalone auth response parser (`standalone::http::parse`): arbitrary bytes as what
//! the server sent so far, judged both mid-stream and at end of stream. Any panic is a bug (a
//! chunk size of `ffffffffffffffff` used to wrap `size + 2` and abort the daemon).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect::link::standalone::http::{HttpError, parse};

/// Mirrors the parser's cap (256 KiB): no body it returns may be larger.
const MAX_BODY: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let mid = parse(data, false);
    let end = parse(data, true);
    for r in [&mid, &end] {
        match r {
            Ok(Some(resp)) => {
                assert!(resp.body.len() <= data.len() && resp.body.len() <= MAX_BODY);
                assert!(resp.status < 1000);
            }
            Ok(None) => {}
            Err(HttpError::Malformed(_)) => {}
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    // At end of stream there is always an answer: a response or an error, never "need more".
    assert!(!matches!(end, Ok(None)), "eof parse asked for more bytes");
    // A complete answer stays complete once the stream ends.
    if let Ok(Some(a)) = &mid {
        assert_eq!(end.as_ref().ok().and_then(|r| r.as_ref()), Some(a));
    }
});
