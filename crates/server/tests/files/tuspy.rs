//! A tus client that no one on this project wrote: Python's tuspy 1.1.0 uploads a multi-megabyte
//! file in checksummed chunks, stops halfway, resumes, and the bytes come back intact.
//!
//! tuspy comes from CI (`.ci/run` installs it and sets `CHAPAR_REQUIRE_TUSPY=1`, so there the
//! test fails rather than skips). Elsewhere, without `import tusclient`, it prints why it skips.
//! `CHAPAR_PYTHON` picks the interpreter (default `python3`), e.g. a venv's.

use std::process::Command;

use crate::harness::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/files/tuspy_upload.py");
const CHUNK_BYTES: usize = 1024 * 1024;

fn python() -> String {
    std::env::var("CHAPAR_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether tuspy can run; without it, skips or (in CI) fails.
fn tuspy_or_skip(python: &str) -> bool {
    let found = Command::new(python)
        .args(["-c", "import tusclient"])
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let required = std::env::var("CHAPAR_REQUIRE_TUSPY").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "CHAPAR_REQUIRE_TUSPY is set but `{python} -c 'import tusclient'` fails: \
         run `{python} -m pip install tuspy==1.1.0`"
    );
    eprintln!(
        "SKIPPED tuspy test: `{python} -c 'import tusclient'` fails. Install it with \
         `{python} -m pip install tuspy==1.1.0` (or point CHAPAR_PYTHON at a venv that has it); \
         CI sets CHAPAR_REQUIRE_TUSPY=1 so the test cannot skip there."
    );
    false
}

/// Runs the upload script off the async runtime; returns the upload URL it printed.
async fn run_tuspy(args: Vec<String>) -> String {
    let python = python();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(SCRIPT)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "tuspy failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_in_checksummed_chunks_resumes_and_the_bytes_come_back() {
    if !tuspy_or_skip(&python()) {
        return;
    }
    let server = start().await;
    let alice = register(&server, "alice").await;
    let data = pattern(5 * CHUNK_BYTES + 12_345, 11);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ciphertext.bin");
    std::fs::write(&file, &data).unwrap();
    let endpoint = format!("{}/v1/files", server.url);
    let common = |extra: &[String]| {
        let mut args = vec![
            endpoint.clone(),
            alice.token.clone(),
            file.display().to_string(),
            CHUNK_BYTES.to_string(),
            "--checksum".into(),
        ];
        args.extend_from_slice(extra);
        args
    };

    // Two chunks, then stop, as an interrupted client would.
    let url = run_tuspy(common(&["--stop-at".into(), (2 * CHUNK_BYTES).to_string()])).await;
    let path = url
        .strip_prefix(&server.url)
        .unwrap_or_else(|| panic!("tuspy followed Location to {url}"))
        .to_owned();
    let halfway = head(&server, &alice, &path).await.expect(200);
    assert_eq!(halfway.number("Upload-Offset"), 2 * CHUNK_BYTES as u64);

    // Resume: tuspy asks the offset (HEAD) and sends the rest in checksummed chunks.
    let resumed = run_tuspy(common(&["--url".into(), url.clone()])).await;
    assert_eq!(resumed, url);
    let done = head(&server, &alice, &path).await.expect(200);
    assert_eq!(done.number("Upload-Offset"), data.len() as u64);

    let downloaded = get(&server, &alice, &path, &[]).await.expect(200);
    assert!(
        downloaded.body == data,
        "the downloaded bytes differ from the uploaded file"
    );
    let text = crate::harness::metrics(&server).await;
    let uploaded = format!("chapar_file_bytes_uploaded_total {}", data.len());
    assert!(
        text.lines().any(|l| l == uploaded),
        "every byte was committed exactly once:\n{text}"
    );
}
