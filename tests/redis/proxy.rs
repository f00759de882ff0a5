//! A TCP proxy of the tests' own between the store and Redis, on loopback, that makes the
//! path slow, a black hole, or cuts connections with a reset in the middle of a reply.
//! The fault applies to connections already open too (a pool keeps its connections).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Forwards as it is.
    Pass,
    /// Holds every chunk this long before forwarding it, both ways.
    Delay(Duration),
    /// Forwards nothing while it lasts: connections stay open, nothing is answered, and
    /// what was sent arrives once the fault is lifted (as over a network path that drops
    /// every packet until it heals, with TCP retransmitting).
    BlackHole,
    /// Forwards half of each reply, then resets the client's connection (and new ones).
    Reset,
}

impl Fault {
    fn encode(self) -> u64 {
        match self {
            Self::Pass => 0,
            Self::Delay(delay) => 1 | (u64::try_from(delay.as_micros()).unwrap() << 2),
            Self::BlackHole => 2,
            Self::Reset => 3,
        }
    }

    fn decode(value: u64) -> Self {
        match value & 3 {
            0 => Self::Pass,
            1 => Self::Delay(Duration::from_micros(value >> 2)),
            2 => Self::BlackHole,
            _ => Self::Reset,
        }
    }
}

/// The proxy: listening on `port`, forwarding to Redis on `upstream`.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    fault: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(AtomicU64::new(Fault::Pass.encode()));
        let shared = Arc::clone(&fault);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay(client, server, fault).await;
                });
            }
        });
        Self { port, fault, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn set(&self, fault: Fault) {
        self.fault.store(fault.encode(), Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits while the path is a black hole (reading no more meanwhile, so that the senders'
/// buffers fill up), then returns the fault in force.
async fn hold(fault: &AtomicU64) -> Fault {
    loop {
        match Fault::decode(fault.load(Ordering::SeqCst)) {
            Fault::BlackHole => tokio::time::sleep(Duration::from_millis(5)).await,
            other => return other,
        }
    }
}

async fn relay(mut client: TcpStream, mut server: TcpStream, fault: Arc<AtomicU64>) {
    let reset = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let requests = async {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match hold(&fault).await {
                    Fault::Delay(delay) => tokio::time::sleep(delay).await,
                    Fault::Pass | Fault::Reset | Fault::BlackHole => {}
                }
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        };
        let replies = async {
            let mut buffer = vec![0u8; 16 * 1024];
            loop {
                let n = match server_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => n,
                };
                match hold(&fault).await {
                    Fault::Delay(delay) => tokio::time::sleep(delay).await,
                    Fault::BlackHole => {}
                    Fault::Reset => {
                        // Half a reply, then a reset.
                        let _ = client_write.write_all(&buffer[..n.div_ceil(2)]).await;
                        return true;
                    }
                    Fault::Pass => {}
                }
                if client_write.write_all(&buffer[..n]).await.is_err() {
                    return false;
                }
            }
        };
        tokio::select! {
            () = requests => false,
            reset = replies => reset,
        }
    };
    if reset {
        // A zero linger turns the close into a reset (RST): the client's read fails.
        let _ = client.set_zero_linger();
    }
}
