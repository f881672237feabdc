//! ILSVRC-2012 (ImageNet) to datasets, the way Caffe's `create_imagenet.sh` prepares it.
//!
//! Sources, as ImageNet ships them:
//! - train: `train/<wnid>/*.JPEG`, one folder per synset;
//! - val: a flat folder of `ILSVRC2012_val_*.JPEG` plus a label file of `name label` lines
//!   (Caffe's `val.txt`; a label is the class index or a synset id), or a folder per synset.
//!
//! Labels follow Caffe's synset order: the class list is the sorted train folder names (which is
//! the order of Caffe's `synsets.txt` for the full set), or the list given as `synsets` (the first
//! word of each line of `synsets.txt` or `synset_words.txt`). The output directory receives
//! `train/` and `val/` (sparknet-data datasets, each committed atomically by its
//! [`DatasetWriter`](crate::DatasetWriter)) and `synsets.txt` (one synset id per line, line `k`
//! naming label `k`), written last and atomically. Train records are shuffled with a fixed seed
//! (Caffe's `--shuffle`), because the trainer gives each rank a contiguous partition and an
//! unshuffled train set would give each rank only some classes; val keeps file-name order.
//!
//! Images are resized so the shorter side is 256 by default ([`Resize::ShorterSide`]); Caffe's
//! `--resize_height/--resize_width` is [`Resize::Exact`]. An image that already has the target
//! size keeps its file bytes; a resized one is re-encoded as JPEG (quality 95). Every file is
//! decoded in full once during conversion: an unreadable, truncated or undecodable image, or a val
//! image without a label, fails the run naming the file and its class ([`OnBad::Fail`], the
//! default), or is skipped and counted ([`OnBad::Skip`]).
//!
//! ```
//! use sparknet_data::convert::imagenet::{ImagenetOptions, ImagenetPlan, ImagenetSource};
//! use sparknet_data::convert::synthetic_imagenet::{SynthOptions, render_image};
//!
//! // Two synsets of two tiny JPEGs each, and a val folder with a label file.
//! let src = tempfile::tempdir()?;
//! let jpeg = |class: usize, i: u64| {
//!     let rgb = render_image(class, 2, 7, i, 40);
//!     let mut bytes = Vec::new();
//!     let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
//!     image::ImageEncoder::write_image(enc, &rgb, 40, 40, image::ExtendedColorType::Rgb8)
//!         .map(|_| bytes)
//! };
//! for (k, wnid) in ["n02", "n01"].iter().enumerate() {
//!     std::fs::create_dir_all(src.path().join("train").join(wnid))?;
//!     for i in 0..2 {
//!         std::fs::write(src.path().join(format!("train/{wnid}/{i}.JPEG")), jpeg(k, i)?)?;
//!     }
//! }
//! std::fs::create_dir_all(src.path().join("val"))?;
//! std::fs::write(src.path().join("val/v1.JPEG"), jpeg(0, 9)?)?;
//! std::fs::write(src.path().join("val.txt"), "v1.JPEG n02\n")?;
//!
//! let source = ImagenetSource {
//!     train: Some(src.path().join("train")),
//!     val: Some(src.path().join("val")),
//!     val_labels: Some(src.path().join("val.txt")),
//!     synsets: None,
//! };
//! let plan = ImagenetPlan::scan(&source)?;
//! assert_eq!(plan.synsets, ["n01", "n02"]); // sorted synset ids are Caffe's labels
//! let out = tempfile::tempdir()?;
//! let opts = ImagenetOptions { resize: sparknet_data::convert::images::Resize::ShorterSide(32), ..Default::default() };
//! let report = plan.convert(out.path(), &opts, &|_, _| {})?;
//! assert_eq!(report.train.as_ref().map(|r| r.manifest.records), Some(4));
//! let val = sparknet_data::Dataset::open_mapped(&out.path().join("val"))?;
//! assert_eq!((val.get(0)?.label, val.get(0)?.shape), (1, [3, 32, 32]));
//! assert_eq!(std::fs::read_to_string(out.path().join("synsets.txt"))?, "n01\nn02\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::convert::images::{self, ImageItem, ImageOptions, ImageReport, Resize};
use crate::error::{Error, IoContext, Result};

/// Name of the synset list written beside the two datasets.
pub const SYNSETS_FILE: &str = "synsets.txt";
/// Subdirectory of the output holding the train dataset.
pub const TRAIN_DIR: &str = "train";
/// Subdirectory of the output holding the val dataset.
pub const VAL_DIR: &str = "val";

/// What to do with an image that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnBad {
    /// Stop with an error naming the file and its class; nothing new is committed.
    #[default]
    Fail,
    /// Leave the image out and count it in the report.
    Skip,
}

/// Which half of ImageNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The validation set.
    Val,
}

/// Where the ILSVRC-2012 files are. At least one of `train` and `val` must be given.
#[derive(Clone, Debug, Default)]
pub struct ImagenetSource {
    /// `train/<wnid>/*.JPEG`.
    pub train: Option<PathBuf>,
    /// The val images: a flat folder (with `val_labels`) or one folder per synset.
    pub val: Option<PathBuf>,
    /// `name label` per line (Caffe's `val.txt`); `label` is a class index or a synset id.
    pub val_labels: Option<PathBuf>,
    /// The class list (first word per line); without it, the sorted train folder names.
    pub synsets: Option<PathBuf>,
}

/// Conversion settings.
#[derive(Clone, Debug)]
pub struct ImagenetOptions {
    /// Resize policy (default: shorter side 256).
    pub resize: Resize,
    /// Bad-input policy (default: fail).
    pub on_bad: OnBad,
    /// Shuffle seed of the train records (default `Some(0)`); `None` keeps class order.
    pub shuffle: Option<u64>,
    /// Records per shard (default 10 000).
    pub shard_size: usize,
}

impl Default for ImagenetOptions {
    fn default() -> Self {
        ImagenetOptions {
            resize: Resize::ShorterSide(256),
            on_bad: OnBad::Fail,
            shuffle: Some(0),
            shard_size: 10_000,
        }
    }
}

/// The listed sources, before any image is read: what [`ImagenetPlan::convert`] will write.
#[derive(Clone, Debug)]
pub struct ImagenetPlan {
    /// Class `k` is `synsets[k]`.
    pub synsets: Vec<String>,
    /// Train images with their labels, in class then file-name order (`None` without a train
    /// folder).
    pub train: Option<Vec<ImageItem>>,
    /// Val images with their labels, in file-name order (`None` without a val folder).
    pub val: Option<Vec<ImageItem>>,
    /// Val images the label file does not mention.
    pub unlabelled: Vec<PathBuf>,
}

/// What [`ImagenetPlan::convert`] wrote.
#[derive(Debug)]
pub struct ImagenetReport {
    /// The class list, as written to `synsets.txt`.
    pub synsets: Vec<String>,
    /// The train dataset's manifest and skipped images.
    pub train: Option<ImageReport>,
    /// The val dataset's manifest and skipped images (unlabelled ones included).
    pub val: Option<ImageReport>,
}

impl ImagenetReport {
    /// Images skipped over both splits.
    pub fn skipped(&self) -> usize {
        self.train.iter().chain(&self.val).map(|r| r.skipped.len()).sum()
    }
}

/// Reads a synset list: the first word of every non-empty line.
///
/// # Errors
/// [`Error::Io`]; [`Error::BadSource`] for an empty list or a repeated synset.
pub fn read_synsets(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let list: Vec<String> =
        text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
    if list.is_empty() {
        return Err(Error::BadSource { path: path.to_path_buf(), reason: "no synsets".into() });
    }
    let mut seen = HashMap::new();
    for (k, s) in list.iter().enumerate() {
        if let Some(j) = seen.insert(s.as_str(), k) {
            return Err(Error::BadSource {
                path: path.to_path_buf(),
                reason: format!("synset {s} on lines {} and {}", j + 1, k + 1),
            });
        }
    }
    Ok(list)
}

fn has_subdirs(dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir).at(dir)? {
        if e.at(dir)?.file_type().at(dir)?.is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Re-labels a folder scan through the class list (`folders[label]` -> index in `synsets`).
fn relabel(
    root: &Path,
    items: Vec<ImageItem>,
    folders: &[String],
    synsets: &[String],
) -> Result<Vec<ImageItem>> {
    let index: HashMap<&str, u32> =
        synsets.iter().enumerate().map(|(k, s)| (s.as_str(), k as u32)).collect();
    let map: Vec<u32> = folders
        .iter()
        .map(|f| {
            index.get(f.as_str()).copied().ok_or_else(|| Error::BadSource {
                path: root.join(f),
                reason: format!("class folder {f} is not in the synset list"),
            })
        })
        .collect::<Result<_>>()?;
    Ok(items.into_iter().map(|it| ImageItem { label: map[it.label as usize], ..it }).collect())
}

/// Parses the val label file into `name -> label`.
fn read_val_labels(path: &Path, synsets: Option<&[String]>) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let index: HashMap<&str, u32> = synsets
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(k, s)| (s.as_str(), k as u32))
        .collect();
    let mut labels = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| Error::BadSource {
            path: path.to_path_buf(),
            reason: format!("line {}: {why}: {line:?}", n + 1),
        };
        let (name, label) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `name label`".into()))?;
        let label = label.trim();
        let k = match label.parse::<u32>() {
            Ok(k) => {
                if let Some(s) = synsets
                    && k as usize >= s.len()
                {
                    return Err(bad(format!("label {k} is out of range for {} classes", s.len())));
                }
                k
            }
            Err(_) => match index.get(label) {
                Some(&k) => k,
                None if synsets.is_none() => {
                    return Err(bad(format!(
                        "label {label} is a synset id, but there is no synset list (give the train folder or --synsets)"
                    )));
                }
                None => return Err(bad(format!("synset {label} is not in the synset list"))),
            },
        };
        labels.insert(name.trim().to_string(), k);
    }
    Ok(labels)
}

/// The image files directly inside `dir`, sorted by name.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let p = e.path();
        if p.is_file() && images::is_image(&p) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

impl ImagenetPlan {
    /// Lists the sources and assigns every image its label; reads no image.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when neither train nor val is given; [`Error::Io`] for
    /// unreadable folders; [`Error::BadSource`] naming the file for a malformed synset list or
    /// label file, a train folder or val label outside the synset list, or a val folder with
    /// neither a label file nor class folders.
    pub fn scan(src: &ImagenetSource) -> Result<Self> {
        if src.train.is_none() && src.val.is_none() {
            return Err(Error::InvalidArgument("give a train folder, a val folder or both".into()));
        }
        let mut synsets = match &src.synsets {
            Some(p) => Some(read_synsets(p)?),
            None => None,
        };
        let train = match &src.train {
            Some(root) => {
                let (items, folders) = images::scan_folders(root)?;
                Some(match &synsets {
                    Some(list) => relabel(root, items, &folders, list)?,
                    None => {
                        synsets = Some(folders);
                        items
                    }
                })
            }
            None => None,
        };
        let mut unlabelled = Vec::new();
        let val = match (&src.val, &src.val_labels) {
            (None, _) => None,
            (Some(dir), Some(labels_file)) => {
                let labels = read_val_labels(labels_file, synsets.as_deref())?;
                let mut items = Vec::new();
                for path in image_files(dir)? {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match labels.get(&name) {
                        Some(&label) => items.push(ImageItem { path, label }),
                        None => unlabelled.push(path),
                    }
                }
                if synsets.is_none() {
                    let max = labels.values().copied().max().unwrap_or(0);
                    synsets = Some((0..=max).map(|k| k.to_string()).collect());
                }
                Some(items)
            }
            (Some(dir), None) if has_subdirs(dir)? => {
                let (items, folders) = images::scan_folders(dir)?;
                Some(match &synsets {
                    Some(list) => relabel(dir, items, &folders, list)?,
                    None => {
                        synsets = Some(folders);
                        items
                    }
                })
            }
            (Some(dir), None) => {
                return Err(Error::BadSource {
                    path: dir.clone(),
                    reason: "val folder has no class folders; give its label file (val.txt) with --val-labels"
                        .into(),
                });
            }
        };
        Ok(ImagenetPlan { synsets: synsets.unwrap_or_default(), train, val, unlabelled })
    }

    /// Images that will be read, per split (`(train, val)`), for progress bars.
    pub fn counts(&self) -> (usize, usize) {
        (self.train.as_ref().map_or(0, Vec::len), self.val.as_ref().map_or(0, Vec::len))
    }

    /// Converts the listed images into `out/train`, `out/val` and `out/synsets.txt`.
    /// `progress(split, n)` is called as images are done.
    ///
    /// # Errors
    /// With [`OnBad::Fail`], [`Error::BadImage`] naming the first unusable image (or unlabelled
    /// val image) and its class; writer errors. A split whose conversion fails commits nothing
    /// (its previous dataset, if any, stays); `synsets.txt` is written only after both splits.
    pub fn convert(
        self,
        out: &Path,
        opts: &ImagenetOptions,
        progress: &(dyn Fn(Split, u64) + Sync),
    ) -> Result<ImagenetReport> {
        let skip = opts.on_bad == OnBad::Skip;
        let unlabelled = |path: &PathBuf| Error::BadImage {
            path: path.clone(),
            class: "(none)".into(),
            reason: "not in the val label file".into(),
        };
        if !skip && let Some(p) = self.unlabelled.first() {
            return Err(unlabelled(p));
        }
        std::fs::create_dir_all(out).at(out)?;
        let base = ImageOptions {
            resize: opts.resize,
            encoded: true,
            gray: false,
            shuffle: None,
            shard_size: opts.shard_size,
            skip_corrupt: skip,
        };
        let train = match self.train {
            Some(items) => {
                let o = ImageOptions { shuffle: opts.shuffle, ..base.clone() };
                let p = |n| progress(Split::Train, n);
                Some(images::convert_images(
                    items,
                    self.synsets.clone(),
                    &out.join(TRAIN_DIR),
                    &o,
                    &p,
                )?)
            }
            None => None,
        };
        let val = match self.val {
            Some(items) => {
                let p = |n| progress(Split::Val, n);
                let mut r = images::convert_images(
                    items,
                    self.synsets.clone(),
                    &out.join(VAL_DIR),
                    &base,
                    &p,
                )?;
                if skip {
                    let mut all: Vec<Error> = self.unlabelled.iter().map(unlabelled).collect();
                    all.append(&mut r.skipped);
                    r.skipped = all;
                }
                Some(r)
            }
            None => None,
        };
        let mut text = String::with_capacity(self.synsets.len() * 10);
        for s in &self.synsets {
            text.push_str(s);
            text.push('\n');
        }
        crate::writer::write_atomic(&out.join(SYNSETS_FILE), text.as_bytes())?;
        Ok(ImagenetReport { synsets: self.synsets, train, val })
    }
}

/// [`ImagenetPlan::scan`] then [`ImagenetPlan::convert`].
///
/// # Errors
/// As those two.
pub fn convert_imagenet(
    src: &ImagenetSource,
    out: &Path,
    opts: &ImagenetOptions,
    progress: &(dyn Fn(Split, u64) + Sync),
) -> Result<ImagenetReport> {
    ImagenetPlan::scan(src)?.convert(out, opts, progress)
}
