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
    ("tokio", "the engine has no runtime"),
    ("sleep(", "the engine never sleeps; it asks for a timeout"),
];

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
            let code = line.split("//").next().unwrap_or_default();
            for (token, why) in FORBIDDEN {
                if code.contains(token) {
                    found.push(format!(
                        "{}:{}: {token} ({why})",
                        file.display(),
                        number + 1
                    ));
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
