//! Test harness: a real `chapar server` on port 0 in a temp directory, and users that run real
//! `chapar` client commands against it. Failures print the command, its output and the tail of
//! the server's log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chapar");

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// The operators' listener (`/metrics`).
    pub metrics_addr: String,
    pub url: String,
    pub addr: String,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts a server with its data and log under `dir`, on a free port.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1:0")
    }

    /// Starts a server on a given address (to restart on the same port).
    pub fn start_on(dir: &Path, listen: &str) -> Self {
        Self::start_with(dir, listen, &[])
    }

    /// Starts a server with extra `chapar server` options.
    pub fn start_with(dir: &Path, listen: &str, options: &[&str]) -> Self {
        let data = dir.join("server-data");
        let log = dir.join("server.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["server", "--listen", listen, "--data"])
            .arg(&data)
            // The operators' listener on a free port too (tests run servers side by side),
            // and registration's proof of work nearly free (one test checks the default).
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--registration-pow-bits",
                "8",
            ])
            .args(options)
            // Debug logging, so the plaintext check also covers the most verbose logs.
            .env("CHAPAR_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn chapar server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..2 {
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
            }
            for _ in lines {} // keep the pipe drained
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let url = line.rsplit(' ').next().unwrap().to_owned();
        // `http://ADDR`, or `https://ADDR#sha256=PIN` over TLS, with `/ENTRY` after ADDR in
        // camouflage.
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .split(['#', '/'])
            .next()
            .unwrap()
            .to_owned();
        let metrics_line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server prints its metrics address");
        let metrics_addr = metrics_line
            .rsplit(' ')
            .next()
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        Self {
            child: Some(child),
            url,
            addr,
            metrics_addr,
            data,
            log,
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status's success.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        false
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A user with a fresh profile under `dir`, not yet registered.
    pub fn user(&self, dir: &Path, name: &str) -> User {
        User {
            name: name.to_owned(),
            profile: dir.join(format!("profile-{name}")),
            server_log: self.log.clone(),
        }
    }

    /// A registered user.
    pub fn register(&self, dir: &Path, name: &str) -> User {
        self.register_with_key(dir, name).0
    }

    /// A registered user and the recovery key registration printed.
    pub fn register_with_key(&self, dir: &Path, name: &str) -> (User, String) {
        self.register_via(&self.url, dir, name)
    }

    /// A user registered through `url` (a relay or proxy in front of this server), and the
    /// recovery key registration printed.
    pub fn register_via(&self, url: &str, dir: &Path, name: &str) -> (User, String) {
        let user = self.user(dir, name);
        let out = user.ok(&["register", "--server", url, "--username", name]);
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("recovery key: "))
            .unwrap_or_else(|| panic!("no recovery key in {out:?}"))
            .to_owned();
        (user, key)
    }

    /// A new device (profile `profile`) linked to `approver`'s account: runs `chapar link`,
    /// reads the code from its first line, approves it on `approver`, and waits for the link
    /// to finish. The device is named after its profile.
    pub fn link(&self, dir: &Path, profile: &str, approver: &User) -> User {
        let (user, status, rest, stderr) = self.link_via(&self.url, dir, profile, approver);
        assert!(
            status.success(),
            "`chapar link` failed ({status}):\n--- stdout\n{rest}\n--- stderr\n{stderr}"
        );
        assert!(
            rest.contains("linked to @"),
            "unexpected link output: {rest}"
        );
        user
    }

    /// Runs a link as [`Self::link`] does, with the new device dialling `url` (a proxy in
    /// front of this server, say); returns the device, how `chapar link` exited, and what
    /// it printed after the code on stdout and on stderr.
    pub fn link_via(
        &self,
        url: &str,
        dir: &Path,
        profile: &str,
        approver: &User,
    ) -> (User, std::process::ExitStatus, String, String) {
        let mut user = self.user(dir, profile);
        user.name = approver.name.clone();
        let mut child = Command::new(BIN)
            .arg("--profile")
            .arg(&user.profile)
            .args(["link", "--server", url, "--device-name", profile])
            .env_remove("CHAPAR_PROFILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chapar link");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(code)) = lines.next() {
                let _ = tx.send(code);
            }
            lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
        });
        let Ok(code) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`chapar link` printed no code; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        };
        approver.ok(&["device", "approve", &code, "--yes"]);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "`chapar link` did not finish");
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = reader.join().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (user, status, rest, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One client profile.
pub struct User {
    pub name: String,
    pub profile: PathBuf,
    server_log: PathBuf,
}

impl User {
    /// Runs `chapar --profile P args...` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--profile")
            .arg(&self.profile)
            .args(args)
            .env_remove("CHAPAR_PROFILE")
            .output()
            .expect("run chapar")
    }

    fn explain(&self, args: &[&str], out: &Output) -> String {
        let log = std::fs::read_to_string(&self.server_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "`chapar {}` as {} exited {:?}\n--- stdout\n{}--- stderr\n{}--- server log tail\n{}",
            args.join(" "),
            self.name,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{}", self.explain(args, &out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "expected failure:\n{}",
            self.explain(args, &out)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Runs `fingerprint` for bob and returns any identity warning on stderr.
    pub fn fails_quietly_on_key_change(&self) -> String {
        let out = self.run(&["fingerprint", "@bob"]);
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("NEW identity key"))
            .collect()
    }

    /// Sends text and returns the message id.
    pub fn send(&self, target: &str, text: &str) -> String {
        self.ok(&["send", target, text]).trim().to_owned()
    }

    /// `messages TARGET --json`, parsed.
    pub fn messages(&self, target: &str) -> Vec<serde_json::Value> {
        json_lines(&self.ok(&["messages", target, "--json"]))
    }

    /// `sync --json`, parsed.
    pub fn sync(&self) -> Vec<serde_json::Value> {
        json_lines(&self.ok(&["sync", "--json"]))
    }

    /// `devices --json`, parsed.
    pub fn devices(&self) -> Vec<serde_json::Value> {
        json_lines(&self.ok(&["devices", "--json"]))
    }

    /// This device's id, from `devices --json`.
    pub fn device_id(&self) -> String {
        self.devices()
            .into_iter()
            .find(|d| d["current"] == true)
            .and_then(|d| d["id"].as_str().map(str::to_owned))
            .expect("a current device")
    }

    /// The device ids in a chat, from `group members`, as `@user device` lines.
    pub fn members(&self, target: &str) -> Vec<String> {
        self.ok(&["group", "members", target])
            .lines()
            .map(|l| l.replace('\t', " "))
            .collect()
    }

    /// Texts of a chat, oldest first.
    pub fn texts(&self, target: &str) -> Vec<String> {
        self.messages(target)
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    }
}

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Plain HTTP/1.1 GET over a TCP socket; returns (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Every file under `dir`, recursively (none if `dir` does not exist yet).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        entries => entries.unwrap(),
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
