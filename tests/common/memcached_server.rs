//! Real `memcached` processes on free loopback ports, started and stopped by the tests.
//! Without `memcached` the tests are skipped with a message — except under `CI=true`,
//! where that is a failure (`scripts/test.sh` installs it).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the tests can run here; panics under `CI=true` when they cannot.
pub(crate) fn available() -> bool {
    crate::installed::installed("memcached")
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// One `memcached` process on a free loopback port; killed on drop.
pub(crate) struct Memcached {
    pub(crate) port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl Memcached {
    /// A server with extra arguments (`-I 64k`: the item size).
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let mut args: Vec<String> = [
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        // memcached refuses to run as root unless told whom to run as.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            args.extend(["-u".to_owned(), "root".to_owned()]);
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let mut server = Self {
            port,
            child: None,
            args,
        };
        server.restart();
        server
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on its port (empty), and waits until it accepts.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new("memcached")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "memcached accepts connections");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}
