//! [`FlatParams`]: all learnable blobs of a net in one contiguous `f32` buffer and their
//! gradients in another (the project's design notes, §2), with the table that says where each
//! blob lives. The type knows nothing of layers or tensors: [`crate::Net`] fills it from its
//! layers' blobs and reads it back (see [`crate::params`]).
//!
//! The solver updates the buffer in one pass with a small table of ranges, model averaging is
//! one in-place allreduce over it, a snapshot is one read.

/// One learnable blob inside the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamEntry {
    /// The owning layer's name.
    pub layer: String,
    /// Index of the blob within the layer's learnable blobs.
    pub blob: usize,
    /// The blob's shape.
    pub shape: Vec<usize>,
    /// Offset of its first value in the buffers.
    pub offset: usize,
    /// Number of values.
    pub len: usize,
    /// `param { lr_mult }` (default 1).
    pub lr_mult: f32,
    /// `param { decay_mult }` (default 1).
    pub decay_mult: f32,
}

/// The two buffers, the entries in buffer order, and the map from (layer index, blob index) to
/// an entry; a blob shared by `param { name }` maps to its owner's entry.
///
/// Invariant: `data` and `diff` have the same length, the entries tile them without gaps in
/// order, and every (layer, blob) pair pushed maps to exactly one entry.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlatParams {
    data: Vec<f32>,
    diff: Vec<f32>,
    entries: Vec<ParamEntry>,
    slot: Vec<Vec<usize>>,
    dirty: bool,
}

impl FlatParams {
    /// Empty buffers for a net of `layers` layers.
    pub(crate) fn with_layers(layers: usize) -> FlatParams {
        FlatParams { slot: vec![Vec::new(); layers], ..FlatParams::default() }
    }

    /// Appends the next blob of layer `layer` with its values (`entry.offset` and `entry.len`
    /// are set here).
    pub(crate) fn push(&mut self, layer: usize, mut entry: ParamEntry, values: &[f32]) {
        entry.offset = self.data.len();
        entry.len = values.len();
        self.data.extend_from_slice(values);
        self.diff.resize(self.data.len(), 0.0);
        self.slot[layer].push(self.entries.len());
        self.entries.push(entry);
    }

    /// Makes the next blob of layer `layer` share blob `owner_blob` of layer `owner`.
    pub(crate) fn share(&mut self, layer: usize, owner: usize, owner_blob: usize) {
        let e = self.slot[owner][owner_blob];
        self.slot[layer].push(e);
    }

    /// The entries in buffer order.
    pub(crate) fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Per layer, the entry index of each of its blobs.
    pub(crate) fn slots(&self) -> &[Vec<usize>] {
        &self.slot
    }

    /// All values.
    pub(crate) fn data(&self) -> &[f32] {
        &self.data
    }

    /// All values, to change in place; marks them changed.
    pub(crate) fn data_mut(&mut self) -> &mut [f32] {
        self.dirty = true;
        &mut self.data
    }

    /// All gradients.
    pub(crate) fn diff_mut(&mut self) -> &mut [f32] {
        &mut self.diff
    }

    /// Values and gradients together; marks the values changed.
    pub(crate) fn both_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        self.dirty = true;
        (&mut self.data, &mut self.diff)
    }

    /// The values of one blob, to overwrite (a layer's forward replaced them); does not mark the
    /// buffer changed, since the caller holds the same values in its tensor.
    pub(crate) fn blob_values_mut(&mut self, layer: usize, blob: usize) -> &mut [f32] {
        let en = &self.entries[self.slot[layer][blob]];
        &mut self.data[en.offset..en.offset + en.len]
    }

    /// The entry and gradient of one blob.
    pub(crate) fn blob_grad_mut(&mut self, layer: usize, blob: usize) -> (&ParamEntry, &mut [f32]) {
        let en = &self.entries[self.slot[layer][blob]];
        (en, &mut self.diff[en.offset..en.offset + en.len])
    }

    /// True (once) when the values were handed out mutably since the last call.
    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The number of values.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }
}
