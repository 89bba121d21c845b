//! Warm instances of one component. A request takes an idle instance (the
//! most recently used: its caches are the warmest) or the app makes a new
//! one; when the request is over, the instance comes back only if it is
//! healthy, and otherwise is thrown away with a [`Discard`] reason that the
//! health metrics count.

use crate::instance::InstanceState;
use crate::manifest::{Component, Isolation};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// An instance whose memories hold more than this fraction of the
/// component's `memory_mb` after a request is not reused (a fresh one
/// starts small again).
pub const MEMORY_WATERMARK_PERCENT: u64 = 75;

/// Resource handles a warm instance may still hold after a request (cached
/// metric instruments, spans a guest kept, streams it caches): past this,
/// the guest is leaking handles and the instance is replaced before it
/// grows the host.
pub const MAX_HANDLES_KEPT: usize = 1024;

/// How long a request with no idle instance waits for one that has answered
/// its request and is finishing (its guest returning), before it makes a new
/// one: a client that sends its next request as soon as it has the last
/// answer would otherwise race the instance back into the pool and cost an
/// instantiation.
pub const FINISHING_WAIT: Duration = Duration::from_millis(5);

/// A component instance with its store, ready to serve a request.
pub struct Warm {
    pub store: Store<InstanceState>,
    pub proxy: Proxy,
    /// Requests it has started so far.
    pub served: u32,
    idle_since: Instant,
}

impl Warm {
    /// A new instance, not yet used.
    pub fn new(store: Store<InstanceState>, proxy: Proxy) -> Warm {
        Warm {
            store,
            proxy,
            served: 0,
            idle_since: Instant::now(),
        }
    }
}

/// Why an instance was thrown away instead of serving again; the value of
/// `polytrace.instance.discard_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The guest trapped (or failed in the host) during the request.
    Trap,
    /// The request ran past the component's timeout.
    Timeout,
    /// The handler returned without setting a response.
    NoResponse,
    /// Its memories grew above the watermark.
    Memory,
    /// It kept more than [`MAX_HANDLES_KEPT`] resource handles.
    Handles,
    /// It served the component's `requests_per_instance`.
    MaxRequests,
    /// The component runs with `isolation = "per-request"`.
    PerRequest,
    /// It sat idle longer than the component's `instance_idle_timeout_ms`.
    Idle,
    /// Its slot was needed by another component (`--max-instances`).
    Evicted,
}

impl Discard {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::Trap => "trap",
            Discard::Timeout => "timeout",
            Discard::NoResponse => "no_response",
            Discard::Memory => "memory",
            Discard::Handles => "handles",
            Discard::MaxRequests => "max_requests",
            Discard::PerRequest => "per_request",
            Discard::Idle => "idle",
            Discard::Evicted => "evicted",
        }
    }
}

/// The idle instances of one component and the rules for keeping one.
pub struct InstancePool {
    /// The component's id, for messages.
    id: String,
    idle: Mutex<Vec<Warm>>,
    isolation: Isolation,
    /// Set once a reused instance failed to answer: from then on the
    /// component runs one instance per request.
    reuse_failed: AtomicBool,
    /// Requests a reused instance (one that had served before) answered.
    reused_answers: AtomicUsize,
    /// Whether the "too big to reuse" warning was given.
    memory_warned: AtomicBool,
    /// Instances that answered and whose guest has not returned yet.
    finishing: AtomicUsize,
    /// Signalled when an instance is settled (kept or thrown away).
    settled: tokio::sync::Notify,
    requests_per_instance: u32,
    memory_watermark: usize,
    /// How long an instance may sit idle.
    pub idle_timeout: Duration,
}

impl InstancePool {
    /// An empty pool with `component`'s isolation and limits.
    pub fn new(component: &Component) -> InstancePool {
        InstancePool {
            id: component.id.clone(),
            idle: Mutex::new(Vec::new()),
            isolation: component.isolation,
            reuse_failed: AtomicBool::new(false),
            reused_answers: AtomicUsize::new(0),
            memory_warned: AtomicBool::new(false),
            finishing: AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
            requests_per_instance: component.requests_per_instance,
            memory_watermark: (component.memory_bytes / 100 * MEMORY_WATERMARK_PERCENT) as usize,
            idle_timeout: component.idle_timeout,
        }
    }

    /// The most recently used idle instance, if any.
    pub fn take(&self) -> Option<Warm> {
        self.lock().pop()
    }

    /// An idle instance, waiting up to `wait` for one that is finishing
    /// when none is idle; `None`: make a new one.
    pub async fn take_or_wait(&self, wait: Duration) -> Option<Warm> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the checks, so a settle in between is heard.
            let settled = self.settled.notified();
            if let Some(warm) = self.take() {
                return Some(warm);
            }
            if !self.reuses() || self.finishing.load(Ordering::Acquire) == 0 {
                return None;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.take();
            }
        }
    }

    /// An instance answered its request; its guest is still finishing.
    pub fn answered(&self) {
        self.finishing.fetch_add(1, Ordering::AcqRel);
    }

    /// An instance that had answered is settled (kept or thrown away).
    pub fn finished(&self) {
        self.finishing.fetch_sub(1, Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    /// Whether a finished instance may serve again: the reason it may not,
    /// or `None` when it is healthy.
    pub fn verdict(&self, warm: &mut Warm) -> Option<Discard> {
        if !self.reuses() {
            return Some(Discard::PerRequest);
        }
        let memory = warm.store.data().limits.memory_bytes();
        if memory > self.memory_watermark {
            // Too big after its first request: every instance will be, and
            // reuse silently never happens. Say so, once.
            if warm.served == 1 && !self.memory_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    component = %self.id,
                    "an instance holds {} MiB of memory after its first request, above {MEMORY_WATERMARK_PERCENT}% \
                     of its `memory_mb`, so it is not reused: raise `memory_mb` in the manifest to keep \
                     instances warm",
                    memory >> 20
                );
            }
            return Some(Discard::Memory);
        }
        if warm.store.data_mut().handles() > MAX_HANDLES_KEPT {
            return Some(Discard::Handles);
        }
        if warm.served >= self.requests_per_instance {
            return Some(Discard::MaxRequests);
        }
        None
    }

    /// Whether instances are reused: the component's isolation, unless a
    /// reused instance could not answer.
    pub fn reuses(&self) -> bool {
        self.isolation == Isolation::Reuse && !self.reuse_failed.load(Ordering::Relaxed)
    }

    /// A reused instance answered its request.
    pub fn reused_answered(&self) {
        self.reused_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// A reused instance returned without answering, and no reused instance
    /// of this component has ever answered: the guest cannot serve twice on
    /// one instance (a JavaScript fetch listener cannot: StarlingMonkey
    /// issue 247). Stop reusing; true the first time. A component whose
    /// reused instances have answered before keeps reuse (that request was
    /// the guest's own bug, and only its instance is discarded).
    pub fn stop_reuse(&self) -> bool {
        self.reused_answers.load(Ordering::Relaxed) == 0
            && !self.reuse_failed.swap(true, Ordering::Relaxed)
    }

    /// Keep a healthy instance for the next request.
    pub fn put(&self, mut warm: Warm) {
        warm.idle_since = Instant::now();
        self.lock().push(warm);
    }

    /// Drop the least recently used idle instance, freeing its slot;
    /// false when none is idle.
    pub fn evict_one(&self) -> bool {
        let mut idle = self.lock();
        if idle.is_empty() {
            return false;
        }
        drop(idle.remove(0));
        true
    }

    /// Drop instances idle for longer than `timeout`; returns how many.
    pub fn expire(&self, timeout: Duration) -> usize {
        let expired: Vec<Warm> = {
            let mut idle = self.lock();
            let now = Instant::now();
            let (old, keep) = idle
                .drain(..)
                .partition(|w| now.duration_since(w.idle_since) >= timeout);
            *idle = keep;
            old
        };
        expired.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How `--max-instances` is shared between the components of an app, so
/// one component (slow clients, a flood, a loop) cannot take every
/// instance: each component always has [`Shares::guaranteed`] instances for
/// its requests, and may use more only while every other component's
/// guarantee stays free. With one component it may use all of them.
///
/// A slot is held from when a request takes an instance (warm or new) until
/// the instance is settled; idle instances hold none (they are evicted when
/// their slot is needed).
#[derive(Debug)]
pub struct Shares {
    max: usize,
    guaranteed: usize,
    busy: Mutex<Vec<usize>>,
}

impl Shares {
    /// `max` instances shared by `components` components: each is
    /// guaranteed half of an equal share — none when `max` is below twice
    /// the number of components (first come, first served then).
    pub fn new(max: usize, components: usize) -> Shares {
        let components = components.max(1);
        let guaranteed = if components == 1 {
            max
        } else {
            max / (2 * components)
        };
        Shares {
            max,
            guaranteed,
            busy: Mutex::new(vec![0; components]),
        }
    }

    /// Instances each component can always have.
    pub fn guaranteed(&self) -> usize {
        self.guaranteed
    }

    /// A slot for a request of component `idx`, or `None` when taking one
    /// would leave another component less than its guarantee; given back
    /// when the slot is dropped.
    pub fn take(self: &std::sync::Arc<Self>, idx: usize) -> Option<Slot> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = busy.iter().sum();
        let owed: usize = busy
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != idx)
            .map(|(_, b)| self.guaranteed.saturating_sub(*b))
            .sum();
        let within_guarantee = busy[idx] < self.guaranteed;
        if !within_guarantee && total + 1 + owed > self.max {
            return None;
        }
        busy[idx] += 1;
        Some(Slot {
            shares: self.clone(),
            idx,
        })
    }

    /// Slots component `idx` holds now.
    pub fn busy(&self, idx: usize) -> usize {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())[idx]
    }
}

/// One component's use of one of the shared instances; see [`Shares`].
#[derive(Debug)]
pub struct Slot {
    shares: std::sync::Arc<Shares>,
    idx: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.shares.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy[self.idx] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_component_cannot_take_the_others_guarantees() {
        // 16 instances, 4 components: 2 guaranteed each.
        let shares = Arc::new(Shares::new(16, 4));
        assert_eq!(shares.guaranteed(), 2);
        let mut a: Vec<Slot> = std::iter::from_fn(|| shares.take(0)).take(100).collect();
        // 16 - 3 × 2 kept for the others.
        assert_eq!(a.len(), 10);
        // Each other component still gets its 2...
        let b: Vec<Slot> = std::iter::from_fn(|| shares.take(1)).take(100).collect();
        assert_eq!(b.len(), 2);
        let c: Vec<Slot> = std::iter::from_fn(|| shares.take(2)).take(100).collect();
        let d: Vec<Slot> = std::iter::from_fn(|| shares.take(3)).take(100).collect();
        assert_eq!((c.len(), d.len()), (2, 2));
        assert_eq!(shares.busy(0), 10);
        // Slots come back when dropped.
        a.truncate(4);
        assert_eq!(shares.busy(0), 4);
        drop(c);
        // Component 1 may grow into the free room, but not into 2's guarantee.
        let more: Vec<Slot> = std::iter::from_fn(|| shares.take(1)).take(100).collect();
        assert_eq!(more.len(), 16 - 4 - 2 - 2 - 2);
        assert!(shares.take(2).is_some(), "2's guarantee was kept");
    }

    #[test]
    fn too_few_instances_for_a_reserve_are_first_come_first_served() {
        let shares = Arc::new(Shares::new(3, 4));
        assert_eq!(shares.guaranteed(), 0);
        let taken: Vec<Slot> = std::iter::from_fn(|| shares.take(0)).take(10).collect();
        assert_eq!(taken.len(), 3);
        assert!(shares.take(1).is_none());
    }

    #[test]
    fn a_single_component_may_use_every_instance() {
        let shares = Arc::new(Shares::new(5, 1));
        let all: Vec<Slot> = std::iter::from_fn(|| shares.take(0)).take(10).collect();
        assert_eq!(all.len(), 5);
    }
}
