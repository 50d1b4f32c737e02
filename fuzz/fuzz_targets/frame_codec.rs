//! Frame codec: arbitrary bytes decoded as a `ClientFrame`, a `ServerFrame` and a content
//! `AppMessage` never panic, and whatever decodes re-encodes and decodes to the same value
//! (and the same bytes); the length-prefixed stream framing of the server
//! (`api::stream::codec`), of the client (`transport::frame_codec`) and the client's `Framed`
//! transport, fed the input in pieces of any size, find exactly the frames (and fail exactly
//! where) a plain reference reader does. Details: `chapar_fuzz::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chapar_fuzz::write_seeds_if_asked("frame_codec"),
    |data: &[u8]| chapar_fuzz::codec::run(data)
);
