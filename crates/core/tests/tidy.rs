//! Project checks on the engine's sources: it must stay sans-I/O, so none of them may reach
//! for the system clock, the operating system's randomness, threads, files, sockets or an
//! async runtime. (The wasm32 build and `cargo tree` check the dependencies; this checks our
//! own code.) Every module also starts with a `//!` line saying what it is for.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use std::path::{Path, PathBuf};

/// What the engine's code must not name, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("SystemTime", "time comes from Env"),
    ("Instant::now", "time comes from Env"),
    ("thread_rng", "randomness comes from Env"),
    ("OsRng", "randomness comes from Env"),
    ("getrandom", "randomness comes from Env"),
    ("std::thread", "the engine has no threads"),
    (
        "std::fs",
        "the engine does no file I/O (the profile is opened by path by SQLite)",
    ),
    ("std::net", "the engine has no sockets"),
    ("std::env", "the engine reads no environment"),
    ("std::process", "the engine starts no process"),
    ("rand::random", "randomness comes from Env"),
    ("rand::rng", "randomness comes from Env"),
    ("tokio", "the engine has no runtime"),
    ("sleep(", "the engine never sleeps; it asks for a timeout"),
];

/// What a grouped `use std::{...}` must not bring in.
const FORBIDDEN_IN_STD_GROUPS: &[&str] = &["fs", "thread", "net", "env", "process", "time"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_engine_reaches_for_no_clock_randomness_thread_file_socket_or_runtime() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20, "found the sources: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            // Comments may name what the code must not use.
            if code.starts_with("//") {
                continue;
            }
            for (token, why) in FORBIDDEN {
                if code.contains(token) {
                    found.push(format!(
                        "{}:{}: {token} ({why})",
                        file.display(),
                        number + 1
                    ));
                }
            }
            if let Some(group) = code.split("std::{").nth(1) {
                let names: Vec<&str> = group
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .collect();
                for name in FORBIDDEN_IN_STD_GROUPS {
                    if names.contains(name) {
                        found.push(format!(
                            "{}:{}: std::{{{name}}}",
                            file.display(),
                            number + 1
                        ));
                    }
                }
            }
        }
        assert!(
            text.starts_with("//!"),
            "{} has no //! line saying what it is for",
            file.display()
        );
    }
    assert!(
        found.is_empty(),
        "the engine must stay sans-I/O:\n{}",
        found.join("\n")
    );
}
