//! Real `redis-server` processes on free loopback ports, started and stopped by the tests.
//!
//! Without `redis-server` on the machine the Redis tests are skipped with a message — except
//! under `CI=true`, where that is a failure (`scripts/test.sh` installs it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the Redis tests can run here; panics under `CI=true` when they cannot.
pub(crate) fn available() -> bool {
    crate::installed::installed("redis-server")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// One `redis-server` process; killed and its directory removed on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    /// The CA that signed the server's certificate, when it speaks TLS only.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    /// A standalone server with extra arguments (e.g. `--requirepass x`).
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = Self::dir(port);
        Self::start_in(port, dir, &["--port", &port.to_string()], extra, None)
    }

    /// A server that speaks TLS only, with a certificate for 127.0.0.1 signed by a CA made
    /// for it; the CA's file is [`tls_ca`](Self::tls_ca).
    pub(crate) fn start_tls() -> Self {
        let port = free_port();
        let dir = Self::dir(port);
        let file = |name: &str| {
            dir.join(name)
                .to_str()
                .expect("a UTF-8 temp dir")
                .to_owned()
        };
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl runs");
            assert!(status.success(), "openssl {args:?}");
        };
        let (ca_key, ca, key, csr, cert, ext) = (
            file("ca.key"),
            file("ca.crt"),
            file("server.key"),
            file("server.csr"),
            file("server.crt"),
            file("san.ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .expect("san.ext written");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=trc test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ]);
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        let ca_path = PathBuf::from(&ca);
        Self::start_in(port, dir.clone(), &args, &[], Some(ca_path))
    }

    /// The CA certificate of a TLS server.
    pub(crate) fn tls_ca(&self) -> Option<&PathBuf> {
        self.tls_ca.as_ref()
    }

    fn dir(port: u16) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trc-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        dir
    }

    fn start_in(
        port: u16,
        dir: PathBuf,
        listen: &[&str],
        extra: &[&str],
        tls_ca: Option<PathBuf>,
    ) -> Self {
        let mut args: Vec<String> = listen.iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(
            [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--dir",
                dir.to_str().expect("a UTF-8 temp dir"),
            ]
            .iter()
            .map(|arg| (*arg).to_owned()),
        );
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let mut server = Self {
            port,
            args,
            dir,
            child: None,
            tls_ca,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let port = self.port;
        match &self.tls_ca {
            None => wait_until(
                Duration::from_secs(10),
                || ping(port),
                "redis-server answers PING",
            ),
            Some(ca) => {
                let ca = ca.to_str().expect("a UTF-8 temp dir").to_owned();
                wait_until(
                    Duration::from_secs(10),
                    || cli(port, &["--tls", "--cacert", &ca, "ping"]).contains("PONG"),
                    "redis-server answers PING over TLS",
                );
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL: no goodbye to clients).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running (not killed by the test).
    pub(crate) fn child_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process again on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Whether something on `port` answers like Redis (PONG, or an auth error).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}

pub(crate) fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A local Redis Cluster of three primaries, without replicas or with one each.
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Three primaries, no replicas.
    pub(crate) fn start() -> Self {
        Self::start_with(0)
    }

    /// Three primaries, each with `replicas` replicas (which take over when a primary dies:
    /// the node timeout is 2 s).
    pub(crate) fn start_with(replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create runs");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub(crate) fn wait_until_ok(&self) {
        wait_until(
            Duration::from_secs(20),
            || {
                self.nodes
                    .iter()
                    .all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            },
            "the cluster is ok on every node",
        );
        // With replicas, `ok` comes before every replica has synced with its primary.
        wait_until(
            Duration::from_secs(20),
            || {
                self.nodes.iter().all(|node| {
                    let info = node.cli(&["info", "replication"]);
                    !info.contains("role:slave") || info.contains("master_link_status:up")
                })
            },
            "every replica is in sync",
        );
    }

    /// The nodes that are primaries now, by index.
    pub(crate) fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].child_running()
                    && self.nodes[i]
                        .cli(&["info", "replication"])
                        .contains("role:master")
            })
            .collect()
    }

    /// Waits until the nodes still running report `cluster_state:ok` again (after a
    /// failover).
    pub(crate) fn wait_until_ok_without(&self, down: usize, limit: Duration) {
        wait_until(
            limit,
            || {
                self.nodes
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != down)
                    .all(|(_, node)| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            },
            "the cluster is ok again on the nodes left",
        );
    }

    /// Waits until a replica took over from the killed primary `victim` and the cluster is
    /// ok again on the nodes left.
    pub(crate) fn wait_for_failover(&self, victim: usize) {
        wait_until(
            Duration::from_secs(20),
            || self.primaries().len() == 3,
            "a replica is promoted",
        );
        self.wait_until_ok_without(victim, Duration::from_secs(20));
    }

    pub(crate) fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// How many keys each primary holds.
    pub(crate) fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|node| node.cli(&["dbsize"]).trim().parse().unwrap_or_default())
            .collect()
    }
}

/// A primary watched by one Sentinel, as `redis-sentinel://` URLs expect.
pub(crate) struct Sentinel {
    pub(crate) primary: RedisServer,
    sentinel: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Sentinel {
    pub(crate) fn start() -> Self {
        let primary = RedisServer::start(&[]);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("trc-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the sentinel");
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor primary 127.0.0.1 {} 1\nsentinel down-after-milliseconds primary 2000\n",
                dir.display(),
                primary.port
            ),
        )
        .expect("sentinel.conf written");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        wait_until(
            Duration::from_secs(10),
            || {
                cli(port, &["sentinel", "get-master-addr-by-name", "primary"])
                    .contains(&primary.port.to_string())
            },
            "the sentinel knows the primary",
        );
        Self {
            primary,
            sentinel: Some(child),
            port,
            dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=primary",
            self.port
        )
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
