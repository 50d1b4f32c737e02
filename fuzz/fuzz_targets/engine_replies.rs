//! The client's handling of server replies: `chapar_core::Engine` (in-memory profile, manual
//! clock, fixed seed), after `on_connected` and a started job (registering, by default), fed
//! arbitrary server frames, replies retargeted to its newest request, clock jumps,
//! reconnects, more jobs and answers, never panics, and every frame it sends decodes.
//! Details: `chapar_fuzz::engine`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: chapar_fuzz::write_seeds_if_asked("engine_replies"),
    |data: &[u8]| {
        chapar_fuzz::engine::run(data);
    }
);
