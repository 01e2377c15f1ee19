//! The API's TCP connections, accepted and served with bounds, so that no client can hold the
//! daemon's file descriptors: 1,050 idle connections once took all 1,024, and `/healthz` and
//! the sweeper stopped working.
//!
//! `axum::serve` gives hyper no timer, and hyper quietly drops its 30 s header timeout without
//! one: idle, dribbling (slowloris) and kept-alive connections stayed open forever. Here every
//! connection is hyper's HTTP/1 connection with a timer, watched from its own task:
//!
//! - a request head must arrive whole within `header_timeout` of its first byte;
//! - with no request being handled, a connection is closed once no byte moved either way for
//!   `idle_timeout` (waiting for a first or next request, or a client that stopped reading);
//! - while `max_connections` or more are open, new connections get [`SHED_TIMEOUT`] for their
//!   whole request and no keep-alive: a probe that asks at once is answered, hoarders go.
//!
//! hyper 1.x has one timer for all this: `header_read_timeout` runs from the moment the
//! connection waits for a request (accept, or the end of the previous response) to the end of
//! the head, so it cannot give a kept-alive connection longer than a slow head. The watch
//! below tells the two apart; hyper's timer stays as a backstop at their sum.

use std::{
    io,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::Service as _};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus::IntGauge;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tracing::{debug, info, warn};

use crate::{config::DaemonFile, daemon::Shared};

/// What a connection accepted while `max_connections` are open gets for its whole request.
pub const SHED_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a connection's watch looks again when nothing is due sooner.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The bounds one connection is served with.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    header: Duration,
    idle: Duration,
    keep_alive: bool,
}

impl Bounds {
    const SHED: Bounds = Bounds {
        header: SHED_TIMEOUT,
        idle: SHED_TIMEOUT,
        keep_alive: false,
    };

    fn of(d: &DaemonFile) -> Bounds {
        Bounds {
            header: d.header_timeout,
            idle: d.idle_timeout,
            keep_alive: true,
        }
    }
}

/// What one connection is doing. Times are milliseconds since it was accepted; the socket
/// wrapper, the service wrapper and the watch all update or read it.
struct Activity {
    accepted: Instant,
    /// The last time a byte moved either way or a response became ready.
    last: AtomicU64,
    /// When the first byte of a request head arrived, plus one (0: no head under way).
    head_started: AtomicU64,
    /// Requests handed to the router whose response is not ready yet.
    in_flight: AtomicU32,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            last: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    /// Bytes arrived. With no request being handled they are the start of a head (bytes that
    /// arrive while one is handled are its body, or a pipelined head hyper reads at once).
    fn read(&self) {
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn wrote(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// When the connection is to be closed if nothing else happens, and why; None while a
    /// request is being handled (the handler's own time is not the client's).
    fn deadline(&self, b: Bounds) -> Option<(u64, &'static str)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Relaxed) {
            0 => Some((
                self.last.load(Ordering::Relaxed) + b.idle.as_millis() as u64,
                "idle",
            )),
            started => Some((started - 1 + b.header.as_millis() as u64, "header_timeout")),
        }
    }
}

/// A request being handled: counted from the head hyper parsed to the response being ready.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.head_started.store(0, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, stamping [`Activity`] whenever a byte moves.
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// One open connection in `floodgate_api_connections`, for as long as this lives.
struct Counted(IntGauge);

impl Counted {
    fn new(gauge: &IntGauge) -> Counted {
        gauge.inc();
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accept and serve API connections until the task is aborted; aborting it closes every
/// connection too (they live in its [`JoinSet`]). The bounds are read at each accept, so a
/// reload applies them to new connections.
pub async fn serve(listener: TcpListener, app: Router, sh: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let mut over_cap = false;
    let mut accept_failing = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    accept_failing = false;
                    let (bounds, max) = {
                        let rt = sh.runtime();
                        (Bounds::of(&rt.daemon), rt.daemon.max_connections)
                    };
                    let gauge = &sh.metrics.api_connections;
                    let open = usize::try_from(gauge.get()).unwrap_or(0);
                    let shed = open >= max;
                    if shed != over_cap {
                        over_cap = shed;
                        if shed {
                            warn!(event = "api_connections_over_cap", open, max_connections = max,
                                  why = "new connections get 1s for their request and no keep-alive");
                        } else {
                            info!(event = "api_connections_under_cap", open, max_connections = max);
                        }
                    }
                    let counted = Counted::new(gauge);
                    let bounds = if shed { Bounds::SHED } else { bounds };
                    connections.spawn(serve_one(stream, app.clone(), bounds, counted));
                }
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
                Err(e) => {
                    // Out of file descriptors (EMFILE) or memory: connections will close (they
                    // are all bounded), so wait a little and accept again. Said once per spell.
                    if !accept_failing {
                        warn!(event = "api_accept_failed", error = %e,
                              open = sh.metrics.api_connections.get(),
                              fix = "raise the open-file limit (LimitNOFILE) or lower daemon.max_connections");
                        accept_failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        warn!(event = "api_connection_panicked", error = %e);
                    }
                }
            }
        }
    }
}

/// Serve one connection with `bounds`; closes it when they are crossed.
async fn serve_one(stream: TcpStream, app: Router, bounds: Bounds, _counted: Counted) {
    let activity = Arc::new(Activity::new());
    let io = Watched {
        io: stream,
        activity: activity.clone(),
    };
    let router = TowerToHyperService::new(app);
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&tracked);
        let response = router.call(req);
        async move {
            let r = response.await;
            drop(in_flight);
            r
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(bounds.keep_alive)
        // The backstop: hyper's timer runs from the wait for a request to the end of its head.
        .header_read_timeout(if bounds.keep_alive {
            bounds.idle + bounds.header
        } else {
            bounds.header
        });
    let mut conn = pin!(http.serve_connection(TokioIo::new(io), service));
    loop {
        let now = activity.now();
        let wait = match activity.deadline(bounds) {
            Some((at, why)) if at <= now => {
                debug!(
                    event = "api_connection_closed",
                    why,
                    after_ms = now,
                    shed = !bounds.keep_alive
                );
                return;
            }
            Some((at, _)) => Duration::from_millis(at - now).min(WATCH_EVERY),
            None => WATCH_EVERY,
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(event = "api_connection_ended", error = %e);
                }
                return;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}
