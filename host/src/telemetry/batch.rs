//! The batching both span and log export use: one bounded queue shared by
//! every component's processor, and one worker on the tokio runtime that
//! drains it into per-component batches.
//!
//! A push never blocks and never wakes anyone for a single item: it takes a
//! short lock, and signals the worker only when a full batch is waiting.
//! When the queue is full the push fails and the caller counts the drop.
//! The worker drains on that signal, every `delay`, and on a flush request.
//!
//! The worker only delivers what stays in the host (the console, the
//! embedded store) and hands each batch's network export to an export stage
//! of its own ([`ExportStage`]): at most [`MAX_CONCURRENT_EXPORTS`] in
//! flight and as many waiting as the queue holds; past that, a batch is not
//! exported (counted), so a backend that is slow, hangs or is down costs
//! exported batches, never the console's lines or the viewer's spans.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// Exports of one signal that may be in flight at once. Each waits at most
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, so a backend 200 ms away still takes
/// 4 × 512 items every 200 ms.
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

/// Items of every component, waiting for the worker.
#[derive(Debug)]
pub struct BatchQueue<T> {
    items: Mutex<Vec<(usize, T)>>,
    /// Signalled when a full batch is waiting.
    ready: Notify,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
}

impl<T> BatchQueue<T> {
    pub fn new(max_queue_size: usize, max_export_batch_size: usize) -> BatchQueue<T> {
        let max_queue_size = max_queue_size.max(1);
        BatchQueue {
            items: Mutex::new(Vec::new()),
            ready: Notify::new(),
            max_queue_size,
            max_export_batch_size: max_export_batch_size.clamp(1, max_queue_size),
        }
    }

    /// Queue `item` of component `index`; false (nothing queued) when full.
    pub fn push(&self, index: usize, item: T) -> bool {
        let full_batch = {
            let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
            if items.len() >= self.max_queue_size {
                return false;
            }
            items.push((index, item));
            items.len() == self.max_export_batch_size
        };
        if full_batch {
            self.ready.notify_one();
        }
        true
    }

    /// Up to `n` of the oldest items, and how many are left.
    pub(crate) fn take(&self, n: usize) -> (Vec<(usize, T)>, usize) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() <= n {
            return (std::mem::take(&mut *items), 0);
        }
        let rest = items.split_off(n);
        (std::mem::replace(&mut *items, rest), items.len())
    }
}

/// One batch's network export, as a worker hands it to the export stage.
pub struct Export {
    /// The export itself; it accounts for its own outcome (exported, or
    /// failed and counted).
    pub send: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Called instead of `send` when the export stage already holds as many
    /// batches as it may (the backend takes them slower than they come).
    pub skipped: Box<dyn FnOnce() + Send>,
}

/// What a worker does with the batches it cuts.
pub trait Batches<T> {
    /// Called before each drain (to report drops, say).
    fn before_drain(&mut self) {}

    /// Deliver one batch of component `index` where the host keeps or shows
    /// it (console, store) and return its network export, if it has one.
    /// Runs on the worker between batches: must not wait.
    fn deliver(&mut self, index: usize, batch: Vec<T>) -> Option<Export>;
}

/// A flush request: answered once everything queued before it is exported.
pub type FlushRequest = oneshot::Sender<()>;

enum Job {
    Export(Export),
    /// Answered when every export handed over before it has finished.
    Barrier(FlushRequest),
}

/// The exports of one worker: run on their own task, [`MAX_CONCURRENT_EXPORTS`]
/// at once, at most `waiting` more held; past that, skipped.
pub struct ExportStage {
    jobs: mpsc::UnboundedSender<Job>,
    /// Exports handed over and not yet started.
    waiting: std::sync::Arc<AtomicUsize>,
    max_waiting: usize,
}

impl ExportStage {
    /// Start the stage's task (within a tokio runtime). `max_waiting`: how
    /// many exports may wait for a free slot (at least 1).
    pub fn start(max_waiting: usize, concurrency: usize) -> ExportStage {
        let (jobs, rx) = mpsc::unbounded_channel();
        let waiting = std::sync::Arc::new(AtomicUsize::new(0));
        tokio::spawn(run_exports(rx, waiting.clone(), concurrency.max(1)));
        ExportStage {
            jobs,
            waiting,
            max_waiting: max_waiting.max(1),
        }
    }

    /// Hand `export` over; never waits. Skipped when the stage is full.
    pub fn submit(&self, export: Export) {
        if self.waiting.load(Ordering::Acquire) >= self.max_waiting {
            (export.skipped)();
            return;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(Job::Export(export))) =
            self.jobs.send(Job::Export(export))
        {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            (export.skipped)();
        }
    }

    /// Answer `done` once every export handed over so far has finished.
    pub fn barrier(&self, done: FlushRequest) {
        let _ = self.jobs.send(Job::Barrier(done));
    }
}

async fn run_exports(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    waiting: std::sync::Arc<AtomicUsize>,
    concurrency: usize,
) {
    let mut running = tokio::task::JoinSet::new();
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Export(export) => {
                while running.len() >= concurrency {
                    let _ = running.join_next().await;
                }
                waiting.fetch_sub(1, Ordering::AcqRel);
                running.spawn(export.send);
            }
            Job::Barrier(done) => {
                while running.join_next().await.is_some() {}
                let _ = done.send(());
            }
        }
    }
    while running.join_next().await.is_some() {}
}

/// The worker: runs until every flush sender is gone.
pub async fn run<T, B: Batches<T>>(
    queue: std::sync::Arc<BatchQueue<T>>,
    components: usize,
    mut sink: B,
    delay: Duration,
    mut flush_rx: mpsc::Receiver<FlushRequest>,
) {
    let delay = delay.max(Duration::from_millis(1));
    let batch_size = queue.max_export_batch_size;
    // Batches waiting for the backend: as many as the queue holds (4 with
    // the defaults), so that a queue sized for bursts still buffers them
    // while the backend catches up; the memory of twice the queue at most.
    let exports = ExportStage::start(queue.max_queue_size / batch_size, MAX_CONCURRENT_EXPORTS);
    let deliver = |sink: &mut B, i: usize, batch: Vec<T>| {
        if let Some(export) = sink.deliver(i, batch) {
            exports.submit(export);
        }
    };
    let mut batches: Vec<Vec<T>> = (0..components).map(|_| Vec::new()).collect();
    // When the partial batches go next: every `delay`, whatever the load.
    let mut next_due = tokio::time::Instant::now() + delay;
    // Full batches were left in the queue by the last round (it stopped for
    // the delay's partial batches): go on without waiting for a wake-up.
    let mut more = false;
    loop {
        let mut flushed = None;
        if more {
            match flush_rx.try_recv() {
                Ok(done) => flushed = Some(done),
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        } else {
            tokio::select! {
                () = queue.ready.notified() => {}
                () = tokio::time::sleep_until(next_due) => {}
                done = flush_rx.recv() => match done {
                    Some(done) => flushed = Some(done),
                    None => return,
                },
            }
        }
        sink.before_drain();
        // A full batch is exported at once; a partial one only when the
        // schedule delay has passed or on a flush (as the SDK
        // specification's batch processor does), so a busy host sends full
        // batches instead of a trickle of small ones. Items are taken a
        // batch at a time, and a stream of full batches stops being served
        // when the delay is due, so it never holds another component's
        // partial batch back.
        let mut left;
        loop {
            let taken;
            (taken, left) = queue.take(batch_size);
            for (i, item) in taken {
                batches[i].push(item);
                if batches[i].len() >= batch_size {
                    deliver(&mut sink, i, std::mem::take(&mut batches[i]));
                }
            }
            let due = tokio::time::Instant::now() >= next_due;
            if left == 0 || (flushed.is_none() && (due || left < batch_size)) {
                break;
            }
        }
        if flushed.is_some() || tokio::time::Instant::now() >= next_due {
            for (i, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    deliver(&mut sink, i, std::mem::take(batch));
                }
            }
            next_due = tokio::time::Instant::now() + delay;
        }
        more = left >= batch_size;
        if let Some(done) = flushed {
            exports.barrier(done);
        }
    }
}

/// Ask the worker behind `tx` to export everything queued; waits at most
/// `timeout`.
pub async fn flush(tx: &mpsc::Sender<FlushRequest>, timeout: Duration) -> bool {
    let (done, wait) = oneshot::channel();
    if !matches!(
        tokio::time::timeout(timeout, tx.send(done)).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Seen = Arc<Mutex<Vec<(usize, Vec<u32>)>>>;

    struct Collect(Seen);

    impl Batches<u32> for Collect {
        fn deliver(&mut self, index: usize, batch: Vec<u32>) -> Option<Export> {
            self.0.lock().unwrap().push((index, batch));
            None
        }
    }

    /// A worker over `queue` with an hour's delay, collecting what it exports.
    fn start(
        queue: &Arc<BatchQueue<u32>>,
        components: usize,
    ) -> (Seen, mpsc::Sender<FlushRequest>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(run(
            queue.clone(),
            components,
            Collect(seen.clone()),
            Duration::from_secs(3600),
            rx,
        ));
        (seen, tx)
    }

    #[tokio::test]
    async fn batches_per_component_and_drops_past_the_limit() {
        let queue = Arc::new(BatchQueue::new(5, 2));
        for i in 0..5 {
            assert!(queue.push(i % 2, i as u32));
        }
        assert!(!queue.push(0, 99), "the sixth item finds the queue full");
        let (seen, tx) = start(&queue, 2);
        assert!(flush(&tx, Duration::from_secs(5)).await);
        let seen = seen.lock().unwrap().clone();
        // No batch is larger than 2; every item arrives once, in order per component.
        assert!(seen.iter().all(|(_, b)| b.len() <= 2), "{seen:?}");
        let of = |c: usize| -> Vec<u32> {
            seen.iter()
                .filter(|(i, _)| *i == c)
                .flat_map(|(_, b)| b.clone())
                .collect()
        };
        assert_eq!(of(0), vec![0, 2, 4]);
        assert_eq!(of(1), vec![1, 3]);
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once_and_a_partial_one_waits_for_the_delay() {
        let queue = Arc::new(BatchQueue::new(100, 4));
        let (seen, tx) = start(&queue, 1);
        // Six items queued before the worker runs: the fourth completes a
        // batch and wakes it; the two after it wait for the delay or a flush.
        for i in 0..6 {
            assert!(queue.push(0, i));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*seen.lock().unwrap(), vec![(0, vec![0, 1, 2, 3])]);
        assert!(flush(&tx, Duration::from_secs(5)).await);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(0, vec![0, 1, 2, 3]), (0, vec![4, 5])]
        );
    }

    /// A sink whose exports take `export_time` each, as a network exporter's
    /// do, counting the exports finished and skipped.
    struct Slow {
        seen: Seen,
        export_time: Duration,
        exported: Arc<AtomicUsize>,
        skipped: Arc<AtomicUsize>,
    }

    impl Slow {
        fn new(seen: &Seen, export_time: Duration) -> Slow {
            Slow {
                seen: seen.clone(),
                export_time,
                exported: Arc::default(),
                skipped: Arc::default(),
            }
        }
    }

    impl Batches<u32> for Slow {
        fn deliver(&mut self, index: usize, batch: Vec<u32>) -> Option<Export> {
            self.seen.lock().unwrap().push((index, batch));
            let (exported, skipped) = (self.exported.clone(), self.skipped.clone());
            let export_time = self.export_time;
            Some(Export {
                send: Box::pin(async move {
                    tokio::time::sleep(export_time).await;
                    exported.fetch_add(1, Ordering::SeqCst);
                }),
                skipped: Box::new(move || {
                    skipped.fetch_add(1, Ordering::SeqCst);
                }),
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backend_that_never_answers_holds_back_no_delivery() {
        // Exports that take an hour: the worker still delivers every batch
        // (console, store) at once; the export stage holds its limit of
        // them and skips the rest.
        let queue = Arc::new(BatchQueue::new(8, 2));
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Slow::new(&seen, Duration::from_secs(3600));
        let skipped = sink.skipped.clone();
        let (_tx, rx) = mpsc::channel(1);
        tokio::spawn(run(queue.clone(), 1, sink, Duration::from_secs(3600), rx));
        let mut sent = 0u32;
        for _ in 0..50 {
            for _ in 0..2 {
                assert!(
                    queue.push(0, sent),
                    "the worker stopped draining at item {sent}"
                );
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let delivered: Vec<u32> = seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(delivered, (0..sent).collect::<Vec<_>>());
        // 50 batches: 4 in flight, 8 / 2 = 4 waiting, the other 42 skipped.
        assert_eq!(
            skipped.load(Ordering::SeqCst),
            50 - MAX_CONCURRENT_EXPORTS - 4
        );
    }

    #[tokio::test]
    async fn a_flush_waits_for_the_exports_in_flight() {
        let queue = Arc::new(BatchQueue::new(100, 4));
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Slow::new(&seen, Duration::from_millis(200));
        let exported = sink.exported.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(run(queue.clone(), 1, sink, Duration::from_secs(3600), rx));
        for i in 0..10 {
            assert!(queue.push(0, i));
        }
        assert!(flush(&tx, Duration::from_secs(5)).await);
        // Two full batches and the partial third, all finished.
        assert_eq!(exported.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_does_not_hold_back_another_components_partial_batch() {
        let queue = Arc::new(BatchQueue::new(10_000, 4));
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let (_tx, rx) = mpsc::channel(1);
        tokio::spawn(run(
            queue.clone(),
            2,
            Slow::new(&seen, Duration::from_millis(5)),
            Duration::from_millis(50),
            rx,
        ));
        // Component 1 sends one item; component 0 keeps full batches coming
        // faster than the slow sink takes them.
        assert!(queue.push(1, 7));
        let feeder = {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0u32.. {
                    queue.push(0, i);
                    if i.is_multiple_of(8) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if seen.lock().unwrap().iter().any(|(i, _)| *i == 1) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "component 1's item was never exported"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        feeder.abort();
    }

    #[tokio::test]
    async fn a_backlog_of_full_batches_is_exported_without_waiting_for_the_delay() {
        let queue = Arc::new(BatchQueue::new(100, 4));
        // 40 items queued at once: one wake-up (at the fourth), ten batches.
        for i in 0..40 {
            assert!(queue.push(0, i));
        }
        let (seen, _tx) = start(&queue, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 10, "{seen:?}");
        assert!(seen.iter().all(|(_, b)| b.len() == 4));
    }
}
