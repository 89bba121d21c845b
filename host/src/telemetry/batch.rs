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

    fn take(&self) -> Vec<(usize, T)> {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *items)
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
    // The first export is one full delay away (a plain `interval` would
    // fire at once and export whatever arrived first).
    let delay = delay.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + delay, delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batches: Vec<Vec<T>> = (0..components).map(|_| Vec::new()).collect();
    loop {
        let mut flushed = None;
        // A full batch waiting is exported at once; a partial one only when
        // the schedule delay has passed or on a flush (as the SDK
        // specification's batch processor does), so a busy host sends full
        // batches instead of a trickle of small ones.
        let due = tokio::select! {
            () = queue.ready.notified() => false,
            _ = tick.tick() => true,
            done = flush_rx.recv() => match done {
                Some(done) => {
                    flushed = Some(done);
                    true
                }
                None => return,
            },
        };
        sink.before_drain();
        loop {
            let taken = queue.take();
            if taken.is_empty() {
                break;
            }
            for (i, item) in taken {
                batches[i].push(item);
                if batches[i].len() >= queue.max_export_batch_size {
                    sink.export(i, std::mem::take(&mut batches[i])).await;
                }
            }
        }
        if due {
            for (i, batch) in batches.iter_mut().enumerate() {
                if !batch.is_empty() {
                    sink.export(i, std::mem::take(batch)).await;
                }
            }
        }
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
}
