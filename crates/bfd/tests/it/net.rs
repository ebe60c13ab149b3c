//! Harness for the namespace tests: a tokio runtime on a thread that has
//! entered a test namespace (so the driver's sockets live there), and event
//! waiting with a deadline.

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use tabby_bfd::{Bfd, PeerEvent, SessionSpec, SessionStatus};
use tabby_testbed::Netns;
use tokio::sync::{mpsc, oneshot};

/// Runs `f` on a fresh thread inside `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in netns")
}

/// A tabby BFD driver running inside a namespace, on its own thread.
pub struct NsBfd {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The driver's handle (`None` once [`NsBfd::drop_handle`] ran).
    bfd: Option<Bfd>,
    /// Its state changes.
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    /// Events received but not yet asked for.
    backlog: Vec<PeerEvent>,
}

impl NsBfd {
    /// Starts a driver inside `ns`.
    pub fn start(ns: &Netns) -> NsBfd {
        // RUST_LOG=tabby_bfd=debug shows the driver's decisions.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let path = format!("/run/netns/{}", ns.name());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            rt.block_on(async move {
                let started = Bfd::start();
                ready_tx
                    .send((tokio::runtime::Handle::current(), stop_tx, started))
                    .expect("report start");
                let _ = stop_rx.await;
            });
        });
        let (handle, stop, started) = ready_rx.recv().expect("driver thread");
        let (bfd, events) = started.expect("BFD driver starts");
        NsBfd {
            handle,
            stop: Some(stop),
            thread: Some(thread),
            bfd: Some(bfd),
            events,
            backlog: Vec::new(),
        }
    }

    /// Adds a session.
    pub fn add(&self, spec: SessionSpec) {
        let bfd = self.bfd.clone().expect("driver handle");
        self.handle
            .block_on(async move { bfd.add_session(spec).await })
            .expect("add session");
    }

    /// Removes a session.
    pub fn remove(&self, peer: std::net::IpAddr) {
        let bfd = self.bfd.clone().expect("driver handle");
        self.handle
            .block_on(async move { bfd.remove_session(peer).await })
            .expect("remove session");
    }

    /// Every session's status.
    pub fn sessions(&self) -> Vec<SessionStatus> {
        let bfd = self.bfd.clone().expect("driver handle");
        self.handle
            .block_on(async move { bfd.sessions().await })
            .expect("status")
    }

    /// Waits for the first event matching `want` (events that do not match
    /// are kept for later waits); returns it with the time it took, or
    /// panics with what was seen.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        what: &str,
        want: impl Fn(&PeerEvent) -> bool,
    ) -> (PeerEvent, Duration) {
        let start = Instant::now();
        loop {
            while let Ok(e) = self.events.try_recv() {
                self.backlog.push(e);
            }
            if let Some(i) = self.backlog.iter().position(&want) {
                return (self.backlog.remove(i), start.elapsed());
            }
            if start.elapsed() > timeout {
                panic!("no {what} within {timeout:?}; saw {:?}", self.backlog);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Drops the only handle on the driver, which makes it stop (telling
    /// its peers AdminDown) while its runtime keeps running.
    pub fn drop_handle(&mut self) {
        self.bfd = None;
    }

    /// Drops events received so far.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
        self.backlog.clear();
    }
}

impl Drop for NsBfd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
