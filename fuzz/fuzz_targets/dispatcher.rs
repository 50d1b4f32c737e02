//! Request dispatcher: a real `chapar-server` service on a fresh temporary SQLite store,
//! driven through `api::InProcess` and through the real concurrent session over a byte
//! stream, with frames from the input after a Hello (and a registration, so requests get
//! past the login check). Never panics; every request gets exactly one response naming its
//! request id, or the session ends cleanly once the client stops. Details:
//! `chapar_fuzz::dispatcher`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chapar_fuzz::write_seeds_if_asked("dispatcher"),
    |data: &[u8]| chapar_fuzz::dispatcher::run(data)
);
