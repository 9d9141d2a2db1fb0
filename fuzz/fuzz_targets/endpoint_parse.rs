//! `Endpoint::parse` on arbitrary text: it never panics, every error carries a
//! tcpkit code (>= 1000) and a message, and an endpoint it accepts prints as
//! text that parses back to the same endpoint (address, port and zone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpkit::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Endpoint::parse(text) {
        Ok(ep) => {
            let shown = ep.to_string();
            let back = Endpoint::parse(&shown)
                .unwrap_or_else(|e| panic!("{text:?} -> {shown:?} does not parse back: {e}"));
            assert_eq!(back, ep, "{text:?} -> {shown:?}");
            assert_eq!(back.to_string(), shown);
        }
        Err(err) => {
            assert!(err.code() >= 1000, "{text:?}: code {}", err.code());
            assert!(!err.message().is_empty(), "{text:?}: empty message");
        }
    }
});
