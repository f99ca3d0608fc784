//! The listener and its connections: HTTP/1.1 via hyper, one task per
//! connection, and outages. `Outage::Refuse` closes the listening socket and
//! drops every open connection (clients get "connection refused" / reset, as
//! from a dead apiserver); `Outage::ServiceUnavailable` answers every request
//! with a 503 `Status`, as an apiserver behind a load balancer with no
//! healthy backend would.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::handlers;

/// How the server is (un)available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outage {
    /// Serving normally.
    #[default]
    None,
    /// Listener closed, connections dropped.
    Refuse,
    /// Every request gets 503 ServiceUnavailable.
    ServiceUnavailable,
}

/// Commands from the handle to the accept loop.
pub enum Control {
    /// Close the listener; ack once closed.
    Close(oneshot::Sender<()>),
    /// Listen again on the same address; ack once listening.
    Open(oneshot::Sender<()>),
}

/// Accepts connections until the handle is dropped.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut listener = Some(listener);
    loop {
        tokio::select! {
            cmd = ctl.recv() => match cmd {
                Some(Control::Close(ack)) => {
                    listener = None;
                    let _ = ack.send(());
                }
                Some(Control::Open(ack)) => {
                    if listener.is_none() {
                        listener = Some(rebind(shared.addr).await);
                    }
                    let _ = ack.send(());
                }
                None => return,
            },
            accepted = accept(listener.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(shared.clone(), stream));
                }
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    // The port was ours a moment ago; retry briefly in case the kernel has
    // not released it yet.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("rebinding {addr}: {last:?}");
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let mut kill = shared.kill.subscribe();
    let svc_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move {
            if shared.peek(|s| s.outage) == Outage::Refuse {
                // A request racing the outage on a kept-alive connection:
                // close the connection without an answer.
                return Err(std::io::Error::other("fake apiserver is down"));
            }
            Ok::<_, std::io::Error>(handlers::handle(shared, req).await)
        }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades(); // the node proxy passes upgrades through
    tokio::select! {
        _ = conn => {}
        _ = kill.changed() => {}
    }
}
