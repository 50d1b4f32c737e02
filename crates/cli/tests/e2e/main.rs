//! End-to-end tests: a real server on port 0 and real `chapar` client processes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

mod camouflage;
mod chats;
mod devices;
mod durability;
mod files;
mod harness;
mod operations;
mod postgres;
mod privacy;
mod relay;
mod tls;
