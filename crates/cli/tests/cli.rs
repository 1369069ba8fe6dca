//! The `permsync` binary, run as a user would: admin subcommands, their errors,
//! and a server seeing their changes; durability across `kill -9`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_permsync");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn db(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("p.db").display())
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("PERMSYNC_DB", self.db())
            .env_remove("PERMSYNC_ADDR")
            .env_remove("PERMSYNC_CONFIG");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        err
    }
    fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let base = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            printed.push(line.clone());
            if let Some(addr) = line.strip_prefix("permsync listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            printed,
        }
    }
}

struct Server {
    child: Child,
    base: String,
    printed: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(url: &str, token: &str) -> (u16, Value, Option<u64>) {
    let r = http().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let rev = r
        .headers()
        .get("permissions-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, r.json().await.unwrap_or(Value::Null), rev)
}

#[test]
fn admin_subcommands_manage_users_roles_and_grants() {
    let e = Env::new();
    let mut child = e
        .cmd(&["user", "add", "alice", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pass\n")
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    e.ok(&["role", "set", "editor", "doc:edit", "doc:comment:*"]);
    e.ok(&[
        "grant",
        "alice",
        "invoice:approve",
        "--scope",
        "org/acme",
        "--for",
        "1h",
    ]);
    e.ok(&["grant", "alice", "report:read"]);
    e.ok(&["bind", "alice", "editor", "--scope", "project/7"]);
    let show = e.ok(&["show", "alice"]);
    assert!(
        show.contains("invoice:approve @ org/acme (until "),
        "{show}"
    );
    assert!(show.contains("editor @ project/7"), "{show}");
    assert!(show.contains("doc:comment:* @ project/7"), "{show}");
    e.ok(&["revoke", "alice", "invoice:approve", "--scope", "org/acme"]);
    e.ok(&["unbind", "alice", "editor", "--scope", "project/7"]);
    let show = e.ok(&["show", "alice"]);
    assert!(
        !show.contains("invoice:approve") && !show.contains("editor"),
        "{show}"
    );
    let rev_line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("revision "))
            .unwrap()
            .to_string()
    };
    let before = rev_line(&show);
    e.ok(&["invalidate", "alice"]);
    assert_ne!(rev_line(&e.ok(&["show", "alice"])), before);
}

#[test]
fn errors_are_one_clear_line_and_a_failure_exit() {
    let e = Env::new();
    e.ok(&["user", "add", "bob"]);
    for (args, needle) in [
        (vec!["grant", "bob", "Not:Valid"], "permission"),
        (vec!["grant", "ghost", "a:b"], "ghost"),
        (vec!["grant", "bob", "a:b", "--scope", "org"], "scope"),
        (vec!["grant", "bob", "a:b", "--for", "soon"], "--for"),
        (
            vec!["grant", "bob", "a:b", "--expires", "2000-01-01T00:00:00Z"],
            "future",
        ),
        (vec!["revoke", "bob", "a:b"], "no grant"),
        (vec!["bind", "bob", "ghost-role"], "ghost-role"),
        (vec!["unbind", "bob", "ghost-role"], "not bound"),
        (vec!["user", "add", "bob"], "exists"),
        (vec!["show", "ghost"], "not found"),
        (vec!["token", "bob", "--ttl", "0"], "ttl"),
        (vec!["token", "ghost"], "not found"),
        (vec!["user", "add", "bad name"], "user"),
    ] {
        let err = e.fails(&args);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("permsync: error:"), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "{args:?} should mention {needle}: {err}"
        );
    }
    let out = e.run(&[
        "grant",
        "bob",
        "a:b",
        "--expires",
        "2030-01-01T00:00:00Z",
        "--for",
        "1h",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "flag conflicts are usage errors"
    );
    let out = Command::new(BIN)
        .args(["show", "bob", "--db", "postgres://nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_sees_cli_changes_within_a_second() {
    let e = Env::new();
    e.ok(&["user", "add", "alice"]);
    let server = e.serve(&[]);
    let token = e.ok(&["token", "alice", "--ttl", "120"]).trim().to_string();
    let url = format!("{}/v1/me/permissions", server.base);
    let (status, body, rev) = get_json(&url, &token).await;
    assert_eq!(status, 200, "{body}");
    let rev = rev.unwrap();
    e.ok(&["grant", "alice", "doc:edit"]);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (_, body, now_rev) = get_json(&url, &token).await;
        if now_rev.unwrap() > rev {
            assert!(body["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["permission"] == "doc:edit"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CLI's grant was not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_known_accounts() {
    let e = Env::new();
    let server = e.serve(&["--demo"]);
    assert!(
        server
            .printed
            .iter()
            .any(|l| l.contains("alice") && l.contains("alice-password")),
        "{:?}",
        server.printed
    );
    let login = http()
        .post(format!("{}/v1/auth/login", server.base))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body, _) = get_json(&format!("{}/v1/me/permissions", server.base), &token).await;
    assert_eq!(status, 200);
    assert!(!body["permissions"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_changes_survive_kill_9() {
    let e = Env::new();
    e.ok(&["user", "add", "admin"]);
    e.ok(&["user", "add", "bob"]);
    e.ok(&["grant", "admin", "permsync:admin"]);
    let mut server = e.serve(&[]);
    let admin = e.ok(&["token", "admin", "--ttl", "300"]).trim().to_string();
    let client = http();
    let mut last_rev = 0;
    for i in 0..40 {
        let r = client
            .post(format!("{}/v1/users/bob/grants", server.base))
            .bearer_auth(&admin)
            .json(&json!({"permission": format!("p{i}:use")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        last_rev = r.json::<Value>().await.unwrap()["revision"]
            .as_u64()
            .unwrap();
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    server.child.wait().unwrap();
    drop(server);
    let server = e.serve(&[]);
    let (status, body, _) = get_json(&format!("{}/v1/users/bob", server.base), &admin).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["revision"].as_u64(),
        Some(last_rev),
        "revision went backwards"
    );
    assert_eq!(
        body["grants"].as_array().unwrap().len(),
        40,
        "an acknowledged grant was lost"
    );
    let r = client
        .post(format!("{}/v1/users/bob/grants", server.base))
        .bearer_auth(&admin)
        .json(&json!({"permission": "after:restart"}))
        .send()
        .await
        .unwrap();
    assert!(
        r.json::<Value>().await.unwrap()["seq"].as_u64().unwrap() > last_rev,
        "seq went backwards"
    );
}

#[test]
fn config_file_env_and_flags_in_that_order() {
    let e = Env::new();
    let path = e.dir.path().join("permsync.toml");
    std::fs::write(
        &path,
        "addr = \"127.0.0.1:1\"\nstale_tokens = \"reject\"\nbogus_key = 1\n",
    )
    .unwrap();
    let err = e.fails(&["serve", "--config", path.to_str().unwrap()]);
    assert!(err.contains("bogus_key"), "an unknown key is named: {err}");
    std::fs::write(&path, "stale_tokens = \"sometimes\"\n").unwrap();
    let err = e.fails(&["serve", "--config", path.to_str().unwrap()]);
    assert!(err.contains("stale_tokens"), "{err}");
    // A syntax error that toml gives no message for still says where, on one line.
    std::fs::write(&path, "stale_tokens = \"allow\"\nissuer = ").unwrap();
    let err = e.fails(&["serve", "--config", path.to_str().unwrap()]);
    assert!(err.contains("line 2, column 10"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // The file says one address, the environment another, the flag a third: the flag wins.
    std::fs::write(
        &path,
        "addr = \"127.0.0.1:9\"\n[cors]\norigins = [\"http://localhost:5173\"]\n",
    )
    .unwrap();
    let mut child = e
        .cmd(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ])
        .env("PERMSYNC_ADDR", "127.0.0.1:8")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("permsync listening on http://127.0.0.1:")
            && !line.contains(":8\n")
            && !line.contains(":9\n"),
        "{line}"
    );
    // Without the flag, the environment beats the file: port 8 needs privileges, so
    // the error names the environment's address.
    let err = String::from_utf8(
        e.cmd(&["serve", "--config", path.to_str().unwrap()])
            .env("PERMSYNC_ADDR", "256.0.0.1:8")
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(err.contains("256.0.0.1:8"), "{err}");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The database holds the private signing keys: its files are the owner's alone,
/// and `serve` refuses files others may read unless told to allow them.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn database_files_are_private_and_a_readable_store_is_refused() {
    let e = Env::new();
    e.ok(&["user", "add", "alice"]);
    let db = e.dir.path().join("p.db");
    let [wal, shm] = ["p.db-wal", "p.db-shm"].map(|f| e.dir.path().join(f));
    {
        let server = e.serve(&[]);
        let token = e.ok(&["token", "alice"]).trim().to_string();
        let (status, _, _) = get_json(&format!("{}/v1/me/permissions", server.base), &token).await;
        assert_eq!(status, 200);
        // While the server holds the database, all three files exist.
        for file in [&db, &wal, &shm] {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    }

    set_mode(&db, 0o644);
    let err = e.fails(&["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for needle in [
        db.to_str().unwrap(),
        "0644",
        "chmod 600",
        "allow_readable_store = true",
    ] {
        assert!(err.contains(needle), "the refusal names {needle:?}: {err}");
    }
    set_mode(&db, 0o600);
    // The -wal file counts too (it holds recent writes, keys among them).
    std::fs::write(&wal, b"").unwrap();
    set_mode(&wal, 0o660);
    let err = e.fails(&["serve", "--addr", "127.0.0.1:0"]);
    assert!(err.contains("p.db-wal (mode 0660)"), "{err}");

    // Told to allow it, it serves.
    let config = e.dir.path().join("permsync.toml");
    std::fs::write(&config, "allow_readable_store = true\n").unwrap();
    let server = e.serve(&["--config", config.to_str().unwrap()]);
    let r = http()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `permsync token` opens a session in the store like a login does, so revoking
/// the user's sessions ends its token, and a token naming no session is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_cli_token_is_a_real_session_that_revocation_ends() {
    let e = Env::new();
    e.ok(&["user", "add", "admin"]);
    e.ok(&["user", "add", "alice"]);
    e.ok(&["grant", "admin", "permsync:admin"]);
    let server = e.serve(&[]);
    let alice = e.ok(&["token", "alice", "--ttl", "600"]).trim().to_string();
    let admin = e.ok(&["token", "admin"]).trim().to_string();
    let url = format!("{}/v1/me/permissions", server.base);
    assert_eq!(get_json(&url, &alice).await.0, 200);
    let r = http()
        .post(format!("{}/v1/users/alice/sessions/revoke", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body, _) = get_json(&url, &alice).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_token");
    assert_eq!(
        get_json(&url, &admin).await.0,
        200,
        "only alice's sessions end"
    );
    // A new token is a new session.
    let again = e.ok(&["token", "alice"]).trim().to_string();
    assert_eq!(get_json(&url, &again).await.0, 200);
}
