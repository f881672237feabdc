//! Binding a net's `Data` layers to sparknet-data datasets: the net never reads data itself, the
//! trainer feeds its input blobs from a [`Loader`] over this rank's partition.
//!
//! For each layer of type `Data` in the phase's net: the dataset directory is the override (the
//! `--train-data`/`--test-data` flag) or `data_param.source`; the batch size is
//! `data_param.batch_size`; `transform_param` (or, for old nets, the deprecated transform fields
//! of `data_param`) becomes a [`TransformParams`]. Relative paths resolve against the working
//! directory, as Caffe resolves them. Top 0 receives the images (`N x C x H x W`), top 1 (when
//! present) the labels as `f32` of shape `[N]`, as Caffe's Data layer produces them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle::{Device, Tensor};
use sparknet_data::{Dataset, Loader, LoaderConfig, Mean, MeanImage, TransformParams};
use sparknet_net::Phase;
use sparknet_net::graph::{NetGraph, state_for};
use sparknet_net::proto::{LayerParameter, NetParameter};

use crate::{Error, Result};

/// What one `Data` layer of a net reads.
#[derive(Clone, Debug, PartialEq)]
pub struct DataLayerSpec {
    /// The layer's name.
    pub layer: String,
    /// Its tops: the images, then (optionally) the labels.
    pub tops: Vec<String>,
    /// The dataset directory (a sparknet-data dataset).
    pub source: PathBuf,
    /// Images per batch (`data_param.batch_size`).
    pub batch_size: usize,
    /// The transform (`transform_param`).
    pub transform: TransformParams,
}

/// The `Data` layers the net runs in `phase`, with `source` (when given) replacing every layer's
/// `data_param.source`.
///
/// # Errors
/// [`Error::Config`] naming the layer when it has no source (and none is given), a zero batch
/// size, an unreadable mean file or a `ImageData`/`MemoryData`-style input it cannot bind; net
/// errors when the phase's graph cannot be built.
pub fn data_layers(
    param: &NetParameter,
    phase: Phase,
    source: Option<&Path>,
) -> Result<Vec<DataLayerSpec>> {
    let graph = NetGraph::build(param, Some(&state_for(phase)))?;
    graph
        .layers
        .iter()
        .filter(|node| node.kind == "Data")
        .map(|node| layer_spec(&node.param, &node.tops, source))
        .collect()
}

fn layer_spec(
    layer: &LayerParameter,
    tops: &[String],
    source: Option<&Path>,
) -> Result<DataLayerSpec> {
    let name = layer.name().to_string();
    let dp = layer.data_param.clone().unwrap_or_default();
    let source = match source {
        Some(s) => s.to_path_buf(),
        None if !dp.source().is_empty() => PathBuf::from(dp.source()),
        None => {
            return Err(Error::Config(format!(
                "Data layer '{name}' has no data_param.source; give the dataset with --train-data/--test-data"
            )));
        }
    };
    let batch_size = dp.batch_size() as usize;
    if batch_size == 0 {
        return Err(Error::Config(format!("Data layer '{name}': data_param.batch_size is 0")));
    }
    if tops.is_empty() || tops.len() > 2 {
        return Err(Error::Config(format!(
            "Data layer '{name}' has {} tops; expected data and optionally label",
            tops.len()
        )));
    }
    let transform = match &layer.transform_param {
        Some(tp) => TransformParams {
            scale: tp.scale(),
            mirror: tp.mirror(),
            crop_size: tp.crop_size() as usize,
            mean: mean(&name, tp.mean_file.as_deref(), &tp.mean_value)?,
            force_color: tp.force_color(),
            force_gray: tp.force_gray(),
        },
        // Old nets kept the transform inside data_param.
        None => TransformParams {
            scale: dp.scale(),
            mirror: dp.mirror(),
            crop_size: dp.crop_size() as usize,
            mean: mean(&name, dp.mean_file.as_deref(), &[])?,
            force_color: dp.force_encoded_color(),
            force_gray: false,
        },
    };
    Ok(DataLayerSpec { layer: name, tops: tops.to_vec(), source, batch_size, transform })
}

fn mean(layer: &str, file: Option<&str>, values: &[f32]) -> Result<Mean> {
    match (file, values) {
        (Some(f), []) => {
            MeanImage::read(Path::new(f)).map(Mean::File).map_err(|source| Error::DataLayer {
                layer: layer.to_string(),
                path: f.into(),
                source: source.into(),
                hint: "",
            })
        }
        (Some(_), _) => Err(Error::Config(format!(
            "Data layer '{layer}': transform_param has both mean_file and mean_value"
        ))),
        (None, []) => Ok(Mean::None),
        (None, v) => Ok(Mean::Values(v.to_vec())),
    }
}

/// Opens `spec.source` as a dataset, with an error that says how to make one.
///
/// # Errors
/// [`Error::Config`] naming the layer and directory.
pub fn open_dataset(spec: &DataLayerSpec) -> Result<Arc<Dataset>> {
    Dataset::open_mapped(&spec.source).map(Arc::new).map_err(|source| Error::DataLayer {
        layer: spec.layer.clone(),
        path: spec.source.clone(),
        source: source.into(),
        hint: " (sparknet reads sparknet-data datasets, not LMDB/LevelDB: make one with \
               `sparknet-data convert mnist|cifar10|images ...` and pass it with \
               --train-data/--test-data)",
    })
}

/// How a [`PhaseData`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    /// This rank.
    pub rank: usize,
    /// Number of ranks (each reads its own contiguous partition).
    pub world: usize,
    /// Shuffle every epoch from this seed (`None`: in order, as for testing).
    pub shuffle: Option<u64>,
    /// Seed of the random crops and mirrors.
    pub seed: u64,
    /// Decode threads per loader.
    pub threads: usize,
}

struct Bound {
    spec: DataLayerSpec,
    loader: Loader,
}

/// The loaders of one phase's `Data` layers over this rank's partition, producing the net's input
/// tensors batch after batch (epoch after epoch).
pub struct PhaseData {
    bound: Vec<Bound>,
    records: usize,
}

impl std::fmt::Debug for PhaseData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseData")
            .field("layers", &self.bound.iter().map(|b| &b.spec.layer).collect::<Vec<_>>())
            .field("records", &self.records)
            .finish()
    }
}

impl PhaseData {
    /// Starts a loader per layer of `specs` for `phase`.
    ///
    /// # Errors
    /// Datasets that cannot be opened, partitions that are empty, loader errors.
    pub fn open(specs: &[DataLayerSpec], phase: Phase, feed: FeedConfig) -> Result<PhaseData> {
        Self::open_at(specs, phase, feed, 0)
    }

    /// As [`PhaseData::open`], with every loader starting `batches` batches into its stream
    /// (a resumed run, see [`sparknet_data::Loader::new_at`]).
    ///
    /// # Errors
    /// As [`PhaseData::open`].
    pub fn open_at(
        specs: &[DataLayerSpec],
        phase: Phase,
        feed: FeedConfig,
        batches: u64,
    ) -> Result<PhaseData> {
        let mut bound = Vec::with_capacity(specs.len());
        let mut records = usize::MAX;
        for (i, spec) in specs.iter().enumerate() {
            let ds = open_dataset(spec)?;
            records = records.min(ds.partition(feed.rank, feed.world)?.len());
            let config = LoaderConfig {
                batch_size: spec.batch_size,
                threads: feed.threads.max(1),
                prefetch: 2,
                phase: match phase {
                    Phase::Train => sparknet_data::Phase::Train,
                    Phase::Test => sparknet_data::Phase::Test,
                },
                transform: spec.transform.clone(),
                shuffle: feed.shuffle.map(|s| s ^ i as u64),
                seed: feed.seed ^ ((feed.rank as u64) << 32) ^ i as u64,
                rank: feed.rank,
                world: feed.world,
                skip_corrupt: false,
            };
            let start = batches.saturating_mul(spec.batch_size as u64);
            let loader = Loader::new_at(ds, config, start).map_err(|source| Error::DataLayer {
                layer: spec.layer.clone(),
                path: spec.source.clone(),
                source: source.into(),
                hint: "",
            })?;
            bound.push(Bound { spec: spec.clone(), loader });
        }
        Ok(PhaseData { bound, records: if specs.is_empty() { 0 } else { records } })
    }

    /// True when the net has no `Data` layer in this phase.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Records in this rank's partition (the smallest over the layers).
    pub fn records(&self) -> usize {
        self.records
    }

    /// The batch size of the first layer (0 without layers).
    pub fn batch_size(&self) -> usize {
        self.bound.first().map_or(0, |b| b.spec.batch_size)
    }

    /// The full-batch shape of every input blob (images `[n, c, h, w]`, labels `[n]`), for
    /// [`NetConfig::input_shapes`](sparknet_net::NetConfig::input_shapes), so that the net knows
    /// its parameter shapes before the first batch (to load weights into it).
    pub fn input_shapes(&self) -> HashMap<String, Vec<usize>> {
        let mut shapes = HashMap::new();
        for b in &self.bound {
            let shape = b.loader.batch_shape();
            shapes.insert(b.spec.tops[0].clone(), shape.to_vec());
            if let Some(label) = b.spec.tops.get(1) {
                shapes.insert(label.clone(), vec![shape[0]]);
            }
        }
        shapes
    }

    /// Time spent waiting for batches so far, summed over the layers.
    pub fn wait(&self) -> Duration {
        self.bound.iter().map(|b| b.loader.stats().wait).sum()
    }

    /// The next batch of every layer as the net's inputs; with `take`, only the first `take`
    /// images of each batch (the last, partial batch of a test pass).
    ///
    /// # Errors
    /// Loader errors naming the layer; tensor errors.
    pub fn next_inputs(&mut self, take: Option<usize>) -> Result<HashMap<String, Tensor>> {
        let mut inputs = HashMap::new();
        for b in &mut self.bound {
            let batch = b.loader.next_batch().map_err(|source| Error::DataLayer {
                layer: b.spec.layer.clone(),
                path: b.spec.source.clone(),
                source: source.into(),
                hint: "",
            })?;
            let [n, c, h, w] = batch.shape();
            let n = take.map_or(n, |t| t.min(n));
            let data = &batch.data()[..n * c * h * w];
            inputs.insert(
                b.spec.tops[0].clone(),
                Tensor::from_slice(data, (n, c, h, w), &Device::Cpu)?,
            );
            if let Some(label_top) = b.spec.tops.get(1) {
                let labels: Vec<f32> = batch.labels()[..n].iter().map(|&l| l as f32).collect();
                inputs.insert(label_top.clone(), Tensor::from_vec(labels, n, &Device::Cpu)?);
            }
        }
        Ok(inputs)
    }
}
