//! The paper's overlap, as two knobs, both off by default.
//!
//! - `async_host_optim`: the host optimizer's step runs on a worker thread,
//!   layer by layer in layer order, while the next micro-batch's forward
//!   pass goes on; a layer's forward waits for its own layer's update only.
//! - `pre_retrieval = p`: the host selects layer i's rows from layer i−p's
//!   FFN input on a worker thread while the device computes layers i−p…i−1;
//!   layer i then computes with its own input over the rows picked early.
//!
//! While a worker has a layer's store, the layer holds a placeholder and a
//! channel on which the store comes back; [`MeftLayer::settle`] waits for
//! it. The worker runs exactly the code the calling thread would, so
//! `async_host_optim` changes when an update happens, never what it is:
//! a run with it on is the same bit for bit as one with it off.
//! `pre_retrieval` changes which rows a token keeps (they are chosen by an
//! earlier layer's input), so it changes results, as in the paper.

use super::{HostStore, MeftLayer, Selection};
use candle_core::Result;
use std::sync::mpsc::{channel, Receiver, SendError, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// One host worker thread running jobs in the order they were given.
pub(super) struct Worker {
    tx: Option<Sender<Job>>,
}

impl Worker {
    /// A worker named `name`; when no thread can be started, jobs run on
    /// the calling thread.
    pub(super) fn start(name: &str) -> Self {
        let (tx, rx) = channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        Self {
            tx: spawned.is_ok().then_some(tx),
        }
    }

    /// Run `job` on the worker, or here when the worker is gone.
    pub(super) fn run(&self, job: Job) {
        let job = match &self.tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(SendError(job)) => job,
            },
            None => job,
        };
        job();
    }
}

/// The workers of one adapter: one for optimizer steps, one for
/// selections, so that a selection never queues behind later layers'
/// updates.
pub(super) struct Workers {
    pub optim: Worker,
    pub select: Worker,
}

impl Workers {
    pub(super) fn start() -> Self {
        Self {
            optim: Worker::start("meft-host-optim"),
            select: Worker::start("meft-pre-retrieval"),
        }
    }
}

/// What a worker hands back: the store, and the selection it made.
pub(super) struct Back {
    pub store: HostStore,
    pub selection: Option<Selection>,
    /// The work panicked: the store is as the panic left it.
    pub failed: bool,
}

/// A layer's store while a worker has it.
pub(super) struct Away {
    rx: Receiver<Back>,
    /// The store's moment bytes and rows when it comes back (the moment
    /// slots of a step are made before the store leaves).
    moment_bytes: u64,
    moment_rows: usize,
    /// The worker is selecting rows (not stepping the optimizer).
    pub selecting: bool,
}

impl MeftLayer {
    /// Hand the store to `worker`, which runs `work` on it; the layer holds
    /// a placeholder until [`MeftLayer::settle`]. When another worker has
    /// the store now, the new work follows that worker's without this
    /// thread waiting for it.
    pub(super) fn send_away<F>(&mut self, worker: &Worker, selecting: bool, work: F)
    where
        F: FnOnce(&mut HostStore) -> Option<Selection> + Send + 'static,
    {
        let (from, moment_bytes, moment_rows) = match self.away.take() {
            Some(old) => (Err(old.rx), old.moment_bytes, old.moment_rows),
            None => {
                let bytes = self.store.moment_bytes();
                let rows = self.store.rows_with_moments();
                let placeholder = HostStore::placeholder(self.store.moment_dtype());
                (
                    Ok(std::mem::replace(&mut self.store, placeholder)),
                    bytes,
                    rows,
                )
            }
        };
        let (tx, rx) = channel();
        self.away = Some(Away {
            rx,
            moment_bytes,
            moment_rows,
            selecting,
        });
        worker.run(Box::new(move || {
            let (mut store, failed) = match from {
                Ok(store) => (store, false),
                Err(rx) => match rx.recv() {
                    Ok(back) => (back.store, back.failed),
                    // Lost already: the layer's settle says so.
                    Err(_) => return,
                },
            };
            // A panic in the work still hands the store back, marked, so
            // the layer never goes on with a placeholder.
            let run = |store: &mut HostStore| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(store)))
            };
            let (selection, failed) = match failed {
                true => (None, true),
                false => match run(&mut store) {
                    Ok(selection) => (selection, false),
                    Err(_) => (None, true),
                },
            };
            let back = Back {
                store,
                selection,
                failed,
            };
            // The adapter may be gone (a run that stopped): nothing waits.
            let _ = tx.send(back);
        }));
    }

    /// Wait for the store to come back from a worker (at once when it is
    /// here); a selection it made is kept for this layer's forward pass.
    /// Once a worker has failed on the store, every call fails.
    pub fn settle(&mut self) -> Result<()> {
        if let Some(away) = self.away.take() {
            match away.rx.recv() {
                Ok(back) => {
                    self.store = back.store;
                    self.failed = back.failed;
                    if back.selection.is_some() {
                        self.preselected = back.selection;
                    }
                }
                // The worker died before handing the store back.
                Err(_) => self.failed = true,
            }
        }
        if self.failed {
            candle_core::bail!(
                "adapter layer {}: a host worker failed on its rows",
                self.layer
            );
        }
        Ok(())
    }

    /// Whether the store is here and whole (not with a worker, no worker
    /// failed on it).
    pub fn is_settled(&self) -> bool {
        self.away.is_none() && !self.failed
    }

    /// Whether a worker is selecting this layer's rows now.
    pub(super) fn selecting(&self) -> bool {
        self.away.as_ref().is_some_and(|a| a.selecting)
    }

    /// Bytes of AdamW moments, as they will be once a worker is done.
    pub fn moment_bytes(&self) -> u64 {
        self.away
            .as_ref()
            .map_or_else(|| self.store.moment_bytes(), |a| a.moment_bytes)
    }

    /// Rows with AdamW moments, as they will be once a worker is done.
    pub fn rows_with_moments(&self) -> usize {
        self.away
            .as_ref()
            .map_or_else(|| self.store.rows_with_moments(), |a| a.moment_rows)
    }
}
