//! The parallel loader: decode and transform into reused batch buffers on a private thread pool,
//! a bounded number of batches ahead of the consumer.
//!
//! A fixed pool of `prefetch + 1` [`Batch`] buffers circulates between the producer and the
//! consumer through two bounded channels, so once every buffer has been filled once no batch
//! memory is allocated again. The producer runs on one thread of a dedicated rayon pool of
//! `threads` threads and fills each batch's images in parallel with per-thread [`Decoder`]
//! buffers. Every random choice (crop offsets, mirror) comes from a generator seeded by
//! `(seed, epoch, record)`, so batches are identical for any thread count.
//!
//! ```
//! use std::sync::Arc;
//! use sparknet_data::*;
//!
//! # let dir = tempfile::tempdir()?;
//! # let config = DatasetConfig {
//! #     encoding: Encoding::RawU8, channel_order: ChannelOrder::Gray, classes: vec![], shard_size: 8,
//! # };
//! # let mut w = DatasetWriter::create(dir.path(), config)?;
//! # for i in 0..10u8 { w.append(u32::from(i), [1, 4, 4], &[i; 16])?; }
//! # w.finish()?;
//! let ds = Arc::new(Dataset::open_mapped(dir.path())?);
//! let config = LoaderConfig {
//!     batch_size: 4,
//!     threads: 2,
//!     transform: TransformParams { crop_size: 3, mirror: true, scale: 1.0 / 255.0, ..Default::default() },
//!     shuffle: Some(1),
//!     ..Default::default()
//! };
//! let mut loader = Loader::new(ds, config)?;
//! let batch = loader.next_batch()?;
//! assert_eq!(batch.shape(), [4, 1, 3, 3]);
//! assert_eq!(batch.labels().len(), 4);
//! drop(batch); // the buffer goes back to the loader
//! println!("waited {:?} for data", loader.stats().wait);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::reader::Dataset;
use crate::sampler::{Sampler, SplitMix64, mix};
use crate::transform::{Phase, TransformParams, Transformer};

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Decode threads.
    pub threads: usize,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// TRAIN (random crop, mirror) or TEST (centre crop).
    pub phase: Phase,
    /// The transform.
    pub transform: TransformParams,
    /// Shuffle each epoch from this seed; `None` reads in order.
    pub shuffle: Option<u64>,
    /// Seed of the crop/mirror draws.
    pub seed: u64,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Replace records that fail to read or decode by the next ones, counting them, instead of
    /// returning the error.
    pub skip_corrupt: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            threads: 1,
            prefetch: 2,
            phase: Phase::Train,
            transform: TransformParams::default(),
            shuffle: None,
            seed: 0,
            rank: 0,
            world: 1,
            skip_corrupt: false,
        }
    }
}

/// One batch: `f32` NCHW images and their labels.
#[derive(Debug)]
pub struct Batch {
    data: Vec<f32>,
    labels: Vec<u32>,
    indices: Vec<usize>,
    shape: [usize; 4],
    epoch: u64,
    skipped: usize,
}

impl Batch {
    fn new(shape: [usize; 4]) -> Self {
        Batch {
            data: vec![0.0; shape.iter().product()],
            labels: vec![0; shape[0]],
            indices: vec![0; shape[0]],
            shape,
            epoch: 0,
            skipped: 0,
        }
    }

    /// The images, NCHW.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The labels, one per image.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The global record index of each image.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// `[n, c, h, w]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The epoch of the batch's first image.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The images as a `sparknet_tensor::Tensor<f32>` of shape `[n, c, h, w]` (a copy: the
    /// buffer itself goes back to the loader). With the `candle` feature, the tensor converts on
    /// with `to_candle(&device)`.
    ///
    /// # Errors
    /// [`Error::Tensor`] if the tensor cannot be built (it cannot for a well-formed batch).
    pub fn to_tensor(&self) -> Result<sparknet_tensor::Tensor<f32>> {
        Ok(sparknet_tensor::Tensor::from_vec(self.data.clone(), &self.shape)?)
    }

    /// The labels as a `Tensor<f32>` of shape `[n]` (Caffe's label blob holds floats).
    ///
    /// # Errors
    /// [`Error::Tensor`] if the tensor cannot be built.
    pub fn labels_tensor(&self) -> Result<sparknet_tensor::Tensor<f32>> {
        let v = self.labels.iter().map(|&l| l as f32).collect();
        Ok(sparknet_tensor::Tensor::from_vec(v, &[self.shape[0]])?)
    }

    /// Copies the images into `dst`, which must hold exactly `n * c * h * w` values (for
    /// allocation-free hand-off into a buffer the caller reuses).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a length mismatch.
    pub fn copy_to(&self, dst: &mut [f32]) -> Result<()> {
        if dst.len() != self.data.len() {
            return Err(Error::InvalidArgument(format!(
                "destination holds {} values, the batch {}",
                dst.len(),
                self.data.len()
            )));
        }
        dst.copy_from_slice(&self.data);
        Ok(())
    }

    /// Corrupt records skipped while filling this batch.
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}

/// Counters kept by the consumer side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoaderStats {
    /// Batches handed out.
    pub batches: u64,
    /// Total time [`Loader::next_batch`] spent waiting for a batch.
    pub wait: Duration,
    /// Corrupt records skipped.
    pub skipped: u64,
}

/// A batch on loan; dropping it gives the buffer back to the loader.
pub struct BatchGuard<'a> {
    batch: Option<Batch>,
    free: &'a SyncSender<Batch>,
}

impl Deref for BatchGuard<'_> {
    type Target = Batch;
    fn deref(&self) -> &Batch {
        // `batch` is `Some` from construction until drop.
        self.batch.as_ref().expect("batch present until drop")
    }
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.batch.take() {
            // The channel has room for every buffer; if the producer has gone, the buffer is dropped.
            let _ = self.free.send(b);
        }
    }
}

/// Background loader producing [`Batch`]es forever (epoch after epoch, as Caffe's data layer).
pub struct Loader {
    ready: Receiver<Result<Batch>>,
    free: SyncSender<Batch>,
    producer: Option<std::thread::JoinHandle<()>>,
    stats: LoaderStats,
    shape: [usize; 4],
}

thread_local! {
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new());
}

impl Loader {
    /// Starts the producer for `dataset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero batch size, thread count or prefetch, a bad rank, an
    /// empty partition, or records whose shape cannot give a fixed batch shape; any error from
    /// reading or transforming the first record.
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self> {
        Self::new_at(dataset, config, 0)
    }

    /// As [`Loader::new`], but the first batch starts `start` records into this rank's stream
    /// (epoch `start / partition length`, in that epoch's order): a run resumed at iteration
    /// `i` with batches of `n` passes `i * n` and reads what the uninterrupted run would have.
    ///
    /// # Errors
    /// As [`Loader::new`].
    pub fn new_at(dataset: Arc<Dataset>, config: LoaderConfig, start: u64) -> Result<Self> {
        if config.batch_size == 0 || config.threads == 0 || config.prefetch == 0 {
            return Err(Error::InvalidArgument(
                "batch size, threads and prefetch must be at least 1".into(),
            ));
        }
        let sampler = Sampler::new(dataset.len(), config.rank, config.world, config.shuffle)?;
        if sampler.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "rank {} of {} has no records in a dataset of {}",
                config.rank,
                config.world,
                dataset.len()
            )));
        }
        let transformer = Transformer::new(config.transform.clone(), config.phase)?;
        let item = item_shape(&dataset, &transformer, sampler.epoch(0)[0])?;
        let shape = [config.batch_size, item[0], item[1], item[2]];
        let pool_size = config.prefetch + 1;
        let (free_tx, free_rx) = sync_channel::<Batch>(pool_size);
        let (ready_tx, ready_rx) = sync_channel::<Result<Batch>>(config.prefetch);
        for _ in 0..pool_size {
            free_tx
                .send(Batch::new(shape))
                .map_err(|_| Error::InvalidArgument("loader channel closed".into()))?;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("sparknet-data-{i}"))
            .build()
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot start {} loader threads: {e}",
                    config.threads
                ))
            })?;
        let producer = std::thread::Builder::new()
            .name("sparknet-data-producer".into())
            .spawn(move || {
                // Not empty (checked above), so the division is defined.
                let len = sampler.len() as u64;
                let (epoch, pos) = (start / len, (start % len) as usize);
                let mut stream = Stream { sampler, epoch, order: Vec::new(), pos };
                stream.sampler.epoch_into(epoch, &mut stream.order);
                let mut p = Producer { dataset, transformer, stream, config };
                // Run the loop on a pool thread so each batch's parallel fill needs no injection.
                pool.install(move || p.run(&free_rx, &ready_tx));
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader {
            ready: ready_rx,
            free: free_tx,
            producer: Some(producer),
            stats: LoaderStats::default(),
            shape,
        })
    }

    /// `[n, c, h, w]` of every batch.
    pub fn batch_shape(&self) -> [usize; 4] {
        self.shape
    }

    /// The next batch; the time spent waiting for it is added to [`LoaderStats::wait`].
    ///
    /// # Errors
    /// The error that stopped the producer (a corrupt record without `skip_corrupt`).
    pub fn next_batch(&mut self) -> Result<BatchGuard<'_>> {
        let t = Instant::now();
        let got = self.ready.recv();
        self.stats.wait += t.elapsed();
        let batch =
            got.map_err(|_| Error::InvalidArgument("the loader stopped after an error".into()))??;
        self.stats.batches += 1;
        self.stats.skipped += batch.skipped as u64;
        Ok(BatchGuard { batch: Some(batch), free: &self.free })
    }

    /// Counters so far.
    pub fn stats(&self) -> LoaderStats {
        self.stats
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing our ends makes the producer's next send or receive fail, so it returns. Drain the
        // ready queue first so a producer blocked on a full queue wakes up.
        let (dummy, _) = sync_channel(1);
        drop(std::mem::replace(&mut self.free, dummy));
        while self.ready.try_recv().is_ok() {}
        let (_, dummy_rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.ready, dummy_rx));
        if let Some(h) = self.producer.take() {
            let _ = h.join();
        }
    }
}

fn item_shape(dataset: &Dataset, t: &Transformer, first: usize) -> Result<[usize; 3]> {
    let rec = dataset.get(first)?;
    let (k, j) = dataset.locate(first)?;
    let bad = |reason: String| Error::BadRecord {
        path: dataset.shards()[k].path().to_path_buf(),
        record: j,
        reason,
    };
    let mut d = Decoder::new();
    let px = d.pixels(&rec, t.color_mode()).map_err(bad)?;
    let aug = t.augment(px.h, px.w, &mut SplitMix64::new(0)).map_err(bad)?;
    // Transform the first record once, so that a mean image or mean values that do not fit the
    // records fail here, before any batch, rather than in the first batch.
    let [c, h, w] = t.output_shape(px.c, px.h, px.w);
    t.apply(&px, aug, &mut vec![0f32; c * h * w]).map_err(bad)?;
    if t.params().crop_size == 0 && dataset.manifest().shape.is_none() {
        return Err(Error::InvalidArgument(
            "records differ in shape; set crop_size to batch them".to_string(),
        ));
    }
    Ok(t.output_shape(px.c, px.h, px.w))
}

struct Producer {
    dataset: Arc<Dataset>,
    transformer: Transformer,
    stream: Stream,
    config: LoaderConfig,
}

/// This rank's endless sequence of `(epoch, record)`.
struct Stream {
    sampler: Sampler,
    epoch: u64,
    order: Vec<usize>,
    pos: usize,
}

impl Stream {
    /// The next `(epoch, record)` of this rank's stream.
    fn next_index(&mut self) -> (u64, usize) {
        if self.pos == self.order.len() {
            self.epoch += 1;
            self.sampler.epoch_into(self.epoch, &mut self.order);
            self.pos = 0;
        }
        self.pos += 1;
        (self.epoch, self.order[self.pos - 1])
    }
}

impl Producer {
    fn run(&mut self, free: &Receiver<Batch>, ready: &SyncSender<Result<Batch>>) {
        let mut epochs = vec![0u64; self.config.batch_size];
        let mut failed = vec![false; self.config.batch_size];
        while let Ok(mut batch) = free.recv() {
            for (e_slot, i_slot) in epochs.iter_mut().zip(batch.indices.iter_mut()) {
                (*e_slot, *i_slot) = self.stream.next_index();
            }
            batch.epoch = epochs[0];
            batch.skipped = 0;
            let result = self.fill(&mut batch, &epochs, &mut failed);
            let msg = match result {
                Ok(()) => Ok(batch),
                Err(e) => Err(e),
            };
            let stop = msg.is_err();
            if ready.send(msg).is_err() || stop {
                return;
            }
        }
    }

    fn fill(&mut self, batch: &mut Batch, epochs: &[u64], failed: &mut [bool]) -> Result<()> {
        let per = batch.shape[1] * batch.shape[2] * batch.shape[3];
        let ds = &*self.dataset;
        let t = &self.transformer;
        let seed = self.config.seed;
        let skip = self.config.skip_corrupt;
        batch
            .data
            .par_chunks_mut(per)
            .zip(batch.labels.par_iter_mut())
            .zip(batch.indices.par_iter())
            .zip(epochs.par_iter())
            .zip(failed.par_iter_mut())
            .try_for_each(|((((out, label), &i), &e), fail)| {
                *fail = false;
                match load_one(ds, t, seed, e, i, out, label) {
                    Ok(()) => Ok(()),
                    Err(_) if skip => {
                        *fail = true;
                        Ok(())
                    }
                    Err(err) => Err(err),
                }
            })?;
        // Replace skipped records, in slot order, by the next records of the stream.
        for (slot, fail) in failed.iter_mut().enumerate() {
            while *fail {
                batch.skipped += 1;
                if batch.skipped > 16 * ds.len().max(1) {
                    return Err(Error::InvalidArgument(
                        "every record of this rank is corrupt".into(),
                    ));
                }
                let (e, i) = self.stream.next_index();
                batch.indices[slot] = i;
                let out = &mut batch.data[slot * per..(slot + 1) * per];
                *fail = load_one(ds, t, seed, e, i, out, &mut batch.labels[slot]).is_err();
            }
        }
        Ok(())
    }
}

/// Reads, decodes and transforms record `i` into `out`.
fn load_one(
    ds: &Dataset,
    t: &Transformer,
    seed: u64,
    epoch: u64,
    i: usize,
    out: &mut [f32],
    label: &mut u32,
) -> Result<()> {
    let rec = ds.get(i)?;
    *label = rec.label;
    let mut rng = SplitMix64::new(mix(&[seed, epoch, i as u64]));
    DECODER.with(|d| {
        let mut d = d.borrow_mut();
        t.transform(&rec, &mut d, &mut rng, out).map_err(|reason| {
            let (k, j) = ds.locate(i).unwrap_or((0, i));
            Error::BadRecord { path: ds.shards()[k].path().to_path_buf(), record: j, reason }
        })
    })
}
