//! Real S3 servers on 127.0.0.1 for the tests: a single-node Garage (the production server
//! that ignores conditional writes) and moto (a mock that gets AWS's semantics right), both
//! installed by `scripts/install-test-servers.sh` into `$BLOCKVAULT_TEST_CACHE` (default
//! `~/.cache/blockvault-test`).
//!
//! Each shared server starts once per test process ([`garage`], [`moto`]); tests keep apart
//! by using a fresh prefix ([`Server::vault`], [`Server::store`]). [`RestartableGarage`] is
//! a separate instance a test may kill and start again on the same ports and data.
//!
//! Statics are never dropped, so every server runs under a small `sh` watchdog that polls
//! the test process's PID and, once it is gone, kills the server by PID and removes its
//! temporary directory: `pgrep garage` and `pgrep moto` are empty a second after the tests
//! end, however they end. A missing server binary is a panic that says how to install it,
//! never a silently skipped test.

#![allow(dead_code)] // each test module uses a different subset

use crate::util::{Remote, Vault};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::types::StorageClass;
use blockvault::store::{S3, S3Options};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The one key pair of every test server. Garage imports it (ids are at least 8 characters
/// of `[A-Za-z0-9._-]`, secrets at least 16); moto accepts any.
pub const ACCESS_KEY: &str = "GKblockvault0test0key0id";
pub const SECRET_KEY: &str = "blockvault-test-secret-0123456789abcdef";
/// The bucket that every shared server has.
pub const BUCKET: &str = "blockvault-test";
/// Garage's `s3_region`; requests signed for another region are refused.
pub const GARAGE_REGION: &str = "garage";
pub const MOTO_REGION: &str = "us-east-1";

// The in-process `S3` store (the conformance suite) takes its credentials from the standard
// AWS chain, i.e. from this process's environment. Setting environment variables while other
// threads may read them is undefined behaviour, so they are set once before `main`, while
// the process has one thread, by a constructor in `.init_array` (Linux). They also keep a
// developer's own AWS profile, endpoint or region out of every test.
#[used]
#[unsafe(link_section = ".init_array")]
static AWS_ENV_BEFORE_MAIN: extern "C" fn() = set_aws_env;

extern "C" fn set_aws_env() {
    // SAFETY: constructors in .init_array run before `main`, before the test harness or
    // anything else has started a thread.
    unsafe {
        for (k, v) in aws_env() {
            std::env::set_var(k, v);
        }
        for k in AWS_ENV_REMOVED {
            std::env::remove_var(k);
        }
    }
}

/// The environment under which the binary reaches the test servers: our credentials and
/// nothing from the developer's AWS configuration (no profile files, no instance metadata).
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_CONFIG_FILE", "/nonexistent/blockvault-test/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/blockvault-test/aws-credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// AWS variables a developer's shell may carry that would change where or as whom we talk.
pub const AWS_ENV_REMOVED: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
];

/// Where `scripts/install-test-servers.sh` installs the servers.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("BLOCKVAULT_TEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/blockvault-test")
        }
    }
}

/// A server binary under the cache, or a panic that says how to get it.
fn installed(rel: &str, what: &str) -> PathBuf {
    let path = cache_dir().join(rel);
    assert!(
        path.is_file(),
        "{what} is not installed at {}: run scripts/install-test-servers.sh (it installs into \
         $BLOCKVAULT_TEST_CACHE, default ~/.cache/blockvault-test); these tests never skip",
        path.display()
    );
    path
}

pub fn garage_bin() -> PathBuf {
    installed("garage-2.5.0/bin/garage", "Garage 2.5.0")
}

pub fn moto_bin() -> PathBuf {
    installed("moto-venv/bin/moto_server", "moto_server")
}

/// A port that was free a moment ago. Garage cannot bind port 0 and report what it got, so
/// we bind :0 ourselves, note the port and release it; ports handed out before are never
/// handed out again in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding a free port")
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// A port on which nothing listens (for "endpoint unreachable").
pub fn closed_port() -> u16 {
    free_port()
}

/// Runs a future to completion on a runtime of its own, in a thread of its own: works from
/// plain `#[test]`s and from inside `#[tokio::test]`s alike.
pub fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a runtime")
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

// The watchdog. Arguments: the PID to outlive, a directory to remove once that PID is gone
// (may be empty), the log file, then the server's command line. It prints the server's PID,
// then waits until either the test process or the server is gone (a dead server stays a
// zombie of this shell, so its state is read from /proc rather than with `kill -0`), kills
// the server, reaps it, and removes the directory only if the test process is gone.
const WATCHDOG: &str = r#"
owner=$1; dir=$2; log=$3; shift 3
"$@" >"$log" 2>&1 </dev/null &
server=$!
echo "$server"
alive() {
    st=Z
    { read -r _ _ st _ < "/proc/$1/stat"; } 2>/dev/null
    [ "$st" != Z ]
}
while kill -0 "$owner" 2>/dev/null && alive "$server"; do sleep 0.3; done
kill -9 "$server" 2>/dev/null
wait "$server" 2>/dev/null
if [ -n "$dir" ] && ! kill -0 "$owner" 2>/dev/null; then rm -rf "$dir"; fi
"#;

/// A server process under its watchdog.
struct Process {
    pid: u32,
    watchdog: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` (program, arguments, environment) under the watchdog; `cleanup` is
    /// removed when the test process ends.
    fn spawn(cmd: &Command, cleanup: Option<&Path>, log: &Path) -> Process {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(WATCHDOG)
            .arg("blockvault-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(cleanup.map(Path::as_os_str).unwrap_or_default())
            .arg(log)
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let mut watchdog = sh.spawn().expect("starting sh for the server watchdog");
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reading the server's PID from the watchdog");
        let pid = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "the watchdog printed {line:?}, not a PID, for {:?}",
                cmd.get_program()
            )
        });
        Process {
            pid,
            watchdog,
            log: log.to_path_buf(),
        }
    }

    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| s.split_whitespace().nth(2) != Some("Z"))
            .unwrap_or(false)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL by PID; the watchdog reaps the server and exits.
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.watchdog.wait();
    }
}

/// Which kind of server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Garage,
    Moto,
}

/// A running S3 server with the test bucket.
pub struct Server {
    pub kind: Kind,
    pub endpoint: String,
    pub region: &'static str,
    pub bucket: String,
    process: Mutex<Process>,
    /// Garage's configuration file, for its administration commands (`garage -c ...`).
    config: Option<PathBuf>,
    /// Set once the read-only key exists on this server.
    read_only: OnceLock<()>,
}

impl Server {
    /// A client for the test's own look at the bucket (listing, storage classes). Made afresh
    /// for each runtime: the SDK's connection pool belongs to the runtime it was made in.
    pub fn client(&self) -> aws_sdk_s3::Client {
        client(&self.endpoint, self.region)
    }

    /// A prefix no other test uses.
    pub fn fresh_prefix(&self, what: &str) -> String {
        let mut id = [0u8; 6];
        rand::fill(&mut id);
        format!("{what}-{}", hex::encode(id))
    }

    /// The in-process store on a fresh prefix (credentials from the environment).
    pub async fn store(&self, prefix: &str) -> S3 {
        S3::connect(S3Options {
            bucket: self.bucket.clone(),
            prefix: format!("{prefix}/"),
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.to_string()),
            chunk_storage_class: None,
        })
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.endpoint))
    }

    /// How the binary reaches `s3://bucket/prefix` on this server.
    pub fn remote(&self, prefix: &str) -> Remote {
        Remote {
            url: format!("s3://{}/{prefix}", self.bucket),
            args: vec![
                "--s3-endpoint".into(),
                self.endpoint.clone(),
                "--s3-region".into(),
                self.region.into(),
            ],
            env: aws_env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env_remove: AWS_ENV_REMOVED.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// A scratch directory and a repository on a fresh prefix, not yet initialised.
    pub fn vault(&self, what: &str) -> (Vault, String) {
        let prefix = self.fresh_prefix(what);
        (Vault::at(self.remote(&prefix)), prefix)
    }

    /// Every object under `prefix/`: key (without the prefix), size, storage class.
    pub fn objects(&self, prefix: &str) -> Vec<Object> {
        list_objects(&self.client(), &self.bucket, &format!("{prefix}/"))
    }

    /// Credentials (access key id, secret) that may read the test bucket and not write it:
    /// a second Garage key, allowed `--read` only. Moto enforces no permissions, so only
    /// Garage has them.
    pub fn read_only_key(&self) -> (String, String) {
        const ID: &str = "GK0000000000000000readonly";
        const SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000001";
        let config = self
            .config
            .as_ref()
            .expect("read-only credentials need Garage: moto enforces no permissions");
        self.read_only.get_or_init(|| {
            let garage = |args: &[&str]| {
                let out = Command::new(garage_bin())
                    .arg("-c")
                    .arg(config)
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("running garage {args:?}: {e}"));
                assert!(
                    out.status.success(),
                    "garage {args:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            garage(&["key", "import", "--yes", "-n", "read-only", ID, SECRET]);
            garage(&["bucket", "allow", "--read", &self.bucket, "--key", ID]);
        });
        (ID.into(), SECRET.into())
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log_text()
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub storage_class: String,
}

/// Lists with ListObjectsV2 (all pages), keys relative to `prefix`.
pub fn list_objects(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<Object> {
    block_on(async {
        let mut out = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| {
                panic!(
                    "listing {bucket}/{prefix}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
            for o in page.contents() {
                let key = o.key().unwrap_or_default();
                out.push(Object {
                    key: key.strip_prefix(prefix).unwrap_or(key).to_string(),
                    size: o.size().unwrap_or(-1),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    // ListObjectsV2 leaves it out for STANDARD on some servers.
                    storage_class: o
                        .storage_class()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_else(|| StorageClass::Standard.as_str().to_string()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    })
}

pub fn client(endpoint: &str, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "blockvault-tests",
        ))
        // Garage rejects the SDK's default checksums (S3-TESTING.md).
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Retries `ready` (one request, no SDK retries wanted: a fresh server refuses connections)
/// until it succeeds; panics with the server's log if the server dies or 30 s pass.
fn wait_ready(
    what: &str,
    process: &Process,
    port: u16,
    ready: impl Fn() -> Result<(), String>,
) -> Duration {
    let started = Instant::now();
    let mut last = String::from("never answered");
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            match ready() {
                Ok(()) => return started.elapsed(),
                Err(e) => last = e,
            }
        }
        assert!(
            process.running(),
            "{what} exited during start-up (last answer: {last}); its log:\n{}",
            process.log_text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not become ready within 30 s (last answer: {last}); its log:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory, ports and configuration of one Garage node.
struct GarageNode {
    dir: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    admin_port: u16,
}

impl GarageNode {
    fn new(dir: PathBuf) -> GarageNode {
        let node = GarageNode {
            dir,
            s3_port: free_port(),
            rpc_port: free_port(),
            admin_port: free_port(),
        };
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let config = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{GARAGE_REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            dir = node.dir.display(),
            rpc = node.rpc_port,
            s3 = node.s3_port,
            admin = node.admin_port,
            secret = hex::encode(secret),
        );
        std::fs::write(node.dir.join("garage.toml"), config).expect("writing garage.toml");
        node
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `garage server --single-node --default-bucket`: creates the layout, the key and the
    /// bucket on first start, and finds them again on a restart.
    fn start(&self, cleanup: Option<&Path>) -> Process {
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c")
            .arg(self.dir.join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .env_remove("GARAGE_RPC_SECRET");
        let process = Process::spawn(&cmd, cleanup, &self.dir.join("garage.log"));
        let endpoint = self.endpoint();
        wait_ready("Garage", &process, self.s3_port, || {
            block_on(async {
                client(&endpoint, GARAGE_REGION)
                    .head_bucket()
                    .bucket(BUCKET)
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Config::builder()
                            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
            })
        });
        process
    }
}

fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("blockvault-{what}-"))
        .tempdir()
        .expect("creating a temporary directory")
}

/// The shared Garage of this test process.
pub fn garage() -> &'static Server {
    static GARAGE: OnceLock<Server> = OnceLock::new();
    GARAGE.get_or_init(|| {
        garage_bin();
        // Removed by the watchdog when the test process ends (statics are never dropped).
        let dir = temp_dir("garage").keep();
        let node = GarageNode::new(dir.clone());
        let process = node.start(Some(&dir));
        Server {
            kind: Kind::Garage,
            endpoint: node.endpoint(),
            region: GARAGE_REGION,
            bucket: BUCKET.into(),
            process: Mutex::new(process),
            config: Some(dir.join("garage.toml")),
            read_only: OnceLock::new(),
        }
    })
}

/// The shared moto of this test process, with the test bucket created.
pub fn moto() -> &'static Server {
    static MOTO: OnceLock<Server> = OnceLock::new();
    MOTO.get_or_init(|| {
        let bin = moto_bin();
        let dir = temp_dir("moto").keep();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let process = Process::spawn(&cmd, Some(&dir), &dir.join("moto.log"));
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_ready("moto", &process, port, || {
            block_on(async {
                client(&endpoint, MOTO_REGION)
                    .create_bucket()
                    .bucket(BUCKET)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
            })
        });
        Server {
            kind: Kind::Moto,
            endpoint,
            region: MOTO_REGION,
            bucket: BUCKET.into(),
            process: Mutex::new(process),
            config: None,
            read_only: OnceLock::new(),
        }
    })
}

/// A Garage of its own, which a test may kill and start again on the same ports and data
/// directory (an outage). Stopped and removed when dropped.
pub struct RestartableGarage {
    pub server: Server,
    node: GarageNode,
    dir: Option<tempfile::TempDir>,
}

impl RestartableGarage {
    pub fn start() -> RestartableGarage {
        garage_bin();
        let dir = temp_dir("garage-outage");
        let node = GarageNode::new(dir.path().to_path_buf());
        // The watchdog removes the directory if the test process dies with the server
        // running; otherwise `Drop` does.
        let process = node.start(Some(dir.path()));
        RestartableGarage {
            server: Server {
                kind: Kind::Garage,
                endpoint: node.endpoint(),
                region: GARAGE_REGION,
                bucket: BUCKET.into(),
                process: Mutex::new(process),
                config: Some(dir.path().join("garage.toml")),
                read_only: OnceLock::new(),
            },
            node,
            dir: Some(dir),
        }
    }

    /// SIGKILL: no goodbye to clients, connections reset, nothing flushed.
    pub fn kill(&self) {
        let mut p = self.server.process.lock().unwrap();
        p.kill();
        assert!(!p.running(), "Garage (pid {}) survived SIGKILL", p.pid);
    }

    /// SIGSTOP: connections stay open and nothing answers, as with a hung server.
    pub fn pause(&self) {
        crate::util::send_signal(self.server.process.lock().unwrap().pid, "STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        crate::util::send_signal(self.server.process.lock().unwrap().pid, "CONT");
    }

    /// Starts the server again on the same ports and data; returns how long it took to
    /// answer.
    pub fn restart(&self) -> Duration {
        let started = Instant::now();
        let process = self.node.start(self.dir.as_ref().map(|d| d.path()));
        *self.server.process.lock().unwrap() = process;
        started.elapsed()
    }
}

impl Drop for RestartableGarage {
    fn drop(&mut self) {
        self.server
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kill();
        drop(self.dir.take());
    }
}
