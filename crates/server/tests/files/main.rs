//! The files API against a real server on port 0, over real sockets: tus uploads, ranged
//! downloads, tokens and revocation, garbage collection, limits on transfers running at once,
//! a real third-party tus client (tuspy), and (ignored by default) a 1 GiB transfer that
//! checks the server's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

mod auth;
mod download;
mod gc;
mod harness;
mod memory;
mod transfers;
mod tus;
mod tuspy;
