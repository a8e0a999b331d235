//! A cap on open client connections, and the descriptor limit behind it.
//!
//! Every connection costs a file descriptor and a read buffer. Without a
//! cap, idle or slow-header connections from anyone who can reach the port
//! (no token needed to connect) exhaust the descriptors and the memory. At
//! the cap the server first sheds the oldest connection that has not yet
//! sent a whole request (idle, or still trickling its headers), and refuses
//! a new connection only when every open one is a real client's.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio_util::sync::CancellationToken;

/// Descriptors kept free of client connections: the listener, BigID
/// connections, log and cache files, the runtime's own.
const RESERVED_FDS: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as far as the system
/// allows, and returns the soft limit now in force (`None` when unknown).
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// How many client connections fit under a descriptor limit of `fds`.
pub fn fitting(max_connections: usize, fds: Option<u64>) -> usize {
    match fds {
        Some(fds) => max_connections.min(fds.saturating_sub(RESERVED_FDS).max(1) as usize),
        None => max_connections,
    }
}

/// Open connections, and which of them have not sent a request yet.
#[derive(Debug, Clone)]
pub struct Connections(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    max: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    /// Connections without a complete request, oldest first.
    fresh: Mutex<VecDeque<(u64, CancellationToken)>>,
}

impl Connections {
    /// Allows at most `max` open connections.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Inner {
            max: max.max(1),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            fresh: Mutex::default(),
        }))
    }

    fn fresh(&self) -> MutexGuard<'_, VecDeque<(u64, CancellationToken)>> {
        self.0.fresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a just-accepted connection, shedding the oldest one that has
    /// not sent a request if the cap is reached; `None` when every open
    /// connection is busy with requests (the new one is to be closed).
    pub fn admit(&self) -> Option<Connection> {
        if self.0.open.load(Ordering::Acquire) >= self.0.max {
            let oldest = self.fresh().pop_front();
            match oldest {
                // Its task closes it and frees the place; the new one may
                // briefly run one over the cap.
                Some((_, shed)) => shed.cancel(),
                None => return None,
            }
        }
        self.0.open.fetch_add(1, Ordering::AcqRel);
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let shed = CancellationToken::new();
        self.fresh().push_back((id, shed.clone()));
        Some(Connection {
            connections: self.clone(),
            id,
            shed,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.0.max
    }
}

/// One admitted connection; its place is freed when dropped.
#[derive(Debug)]
pub struct Connection {
    connections: Connections,
    id: u64,
    shed: CancellationToken,
}

impl Connection {
    /// Cancelled when the connection is shed to make room.
    pub fn shed(&self) -> CancellationToken {
        self.shed.clone()
    }

    /// A marker the request path calls once a whole request head arrived.
    pub fn busy_marker(&self) -> BusyMarker {
        BusyMarker {
            connections: self.connections.clone(),
            id: self.id,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let id = self.id;
        self.connections.fresh().retain(|(fresh, _)| *fresh != id);
        self.connections.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a connection off the list of those that may be shed.
#[derive(Debug, Clone)]
pub struct BusyMarker {
    connections: Connections,
    id: u64,
}

impl BusyMarker {
    /// The connection has sent a whole request: it is a client, not a flood.
    pub fn mark(&self) {
        let id = self.id;
        let mut fresh = self.connections.fresh();
        // Most connections are marked on their first request, while new.
        if let Some(at) = fresh.iter().rposition(|(f, _)| *f == id) {
            fresh.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_is_shed_first() {
        let connections = Connections::new(2);
        let a = connections.admit().expect("first");
        let b = connections.admit().expect("second");
        b.busy_marker().mark();
        let c = connections.admit().expect("sheds the idle one");
        assert!(a.shed().is_cancelled());
        assert!(!b.shed().is_cancelled());
        drop(a);
        c.busy_marker().mark();
        assert!(connections.admit().is_none(), "all busy: refused");
        drop(b);
        assert!(connections.admit().is_some());
    }

    #[test]
    fn the_cap_fits_under_the_descriptor_limit() {
        assert_eq!(fitting(4096, Some(1024)), 1024 - RESERVED_FDS as usize);
        assert_eq!(fitting(100, Some(1 << 20)), 100);
        assert_eq!(fitting(100, None), 100);
    }
}
