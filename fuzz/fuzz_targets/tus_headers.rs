//! tus and HTTP headers: requests with arbitrary methods, paths, headers (`Upload-Length`,
//! `Upload-Offset`, `Upload-Checksum`, `Upload-Metadata`, `Range`, `Tus-Resumable`,
//! `Authorization`, `Content-Type`, `X-HTTP-Method-Override`...) and bodies, sent through the
//! real files router, never panic and never get a 500, and a ranged download sends exactly
//! the bytes its `Content-Range` names. Details: `chapar_fuzz::tus`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chapar_fuzz::write_seeds_if_asked("tus_headers"),
    |data: &[u8]| chapar_fuzz::tus::run(data)
);
