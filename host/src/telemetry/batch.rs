//! The batching both span and log export use: one bounded queue shared by
//! every component's processor, and one worker on the tokio runtime that
//! drains it into per-component batches.
//!
//! A push never blocks and never wakes anyone for a single item: it takes a
//! short lock, and signals the worker only when a full batch is waiting.
//! When the queue is full the push fails and the caller counts the drop.
//! The worker drains on that signal, every `delay`, and on a flush request.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

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

/// What a worker does with the batches it cuts.
pub trait Batches<T> {
    /// Called before each drain (to report drops, say).
    fn before_drain(&mut self) {}

    /// Hand one batch of component `index` to its exporters.
    fn export(&mut self, index: usize, batch: Vec<T>) -> impl Future<Output = ()> + Send;
}

/// A flush request: answered once everything queued before it is exported.
pub type FlushRequest = oneshot::Sender<()>;

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
                    sink.export(i, std::mem::take(&mut batches[i])).await;
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
                    sink.export(i, std::mem::take(batch)).await;
                }
            }
            next_due = tokio::time::Instant::now() + delay;
        }
        more = left >= batch_size;
        if let Some(done) = flushed {
            let _ = done.send(());
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
        fn export(&mut self, index: usize, batch: Vec<u32>) -> impl Future<Output = ()> + Send {
            self.0.lock().unwrap().push((index, batch));
            async {}
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

    /// A sink that takes a while per export, as a network exporter does.
    struct Slow(Seen);

    impl Batches<u32> for Slow {
        fn export(&mut self, index: usize, batch: Vec<u32>) -> impl Future<Output = ()> + Send {
            self.0.lock().unwrap().push((index, batch));
            tokio::time::sleep(Duration::from_millis(5))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_stream_does_not_hold_back_another_components_partial_batch() {
        let queue = Arc::new(BatchQueue::new(10_000, 4));
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let (_tx, rx) = mpsc::channel(1);
        tokio::spawn(run(
            queue.clone(),
            2,
            Slow(seen.clone()),
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
