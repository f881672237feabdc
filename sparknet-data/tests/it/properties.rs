//! Property tests on the offset/index arithmetic, partitions and shuffles.

use proptest::prelude::*;
use sparknet_data::format::{self, HEADER_LEN, IndexEntry, PAYLOAD_ALIGN};
use sparknet_data::sampler::{Sampler, partition, permutation_into};
use sparknet_data::{Dataset, Encoding, OpenOptions, Shard};

use crate::common::{Rec, write};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn layout_is_aligned_ordered_and_accepted(lengths in prop::collection::vec(0u64..5000, 0..40)) {
        let (offsets, index_offset) = format::layout(&lengths).unwrap();
        let mut prev = HEADER_LEN as u64;
        for (o, l) in offsets.iter().zip(&lengths) {
            prop_assert_eq!(o % PAYLOAD_ALIGN, 0);
            prop_assert!(*o >= prev);
            prop_assert!(*o - prev < PAYLOAD_ALIGN, "no gap beyond padding");
            let e = IndexEntry { offset: *o, length: *l, label: 0, crc: 0, shape: [0, 0, 0] };
            prev = format::check_entry(&e, prev, index_offset).unwrap();
            prop_assert_eq!(prev, o + l);
        }
        prop_assert_eq!(index_offset % PAYLOAD_ALIGN, 0);
        prop_assert!(index_offset >= prev && index_offset - prev < PAYLOAD_ALIGN);
        let len = format::file_len(index_offset, lengths.len() as u64).unwrap();
        prop_assert_eq!(len, index_offset + 40 * lengths.len() as u64 + 32);
    }

    #[test]
    fn misplaced_entries_are_rejected(len in 1u64..500, shift in 1u64..64, grow in 1u64..200) {
        let (offsets, index_offset) = format::layout(&[len, len]).unwrap();
        let ok = IndexEntry { offset: offsets[1], length: len, label: 0, crc: 0, shape: [0, 0, 0] };
        let first_end = offsets[0] + len;
        prop_assert!(format::check_entry(&ok, first_end, index_offset).is_ok());
        let unaligned = IndexEntry { offset: ok.offset + shift, ..ok };
        prop_assert!(format::check_entry(&unaligned, first_end, index_offset).is_err());
        let too_long = IndexEntry { length: index_offset - ok.offset + grow, ..ok };
        prop_assert!(format::check_entry(&too_long, first_end, index_offset).is_err());
        let overlapping = IndexEntry { offset: offsets[0], ..ok };
        prop_assert!(format::check_entry(&overlapping, first_end, index_offset).is_err());
    }

    #[test]
    fn entries_round_trip(offset: u64, length: u64, label: u32, crc: u32, shape: [u32; 3]) {
        let e = IndexEntry { offset, length, label, crc, shape };
        prop_assert_eq!(IndexEntry::decode(&e.encode()), e);
    }

    #[test]
    fn partitions_cover_every_record_once(len in 0usize..3000, world in 1usize..=8) {
        let mut seen = vec![0u8; len];
        let mut sizes = Vec::new();
        let mut next = 0;
        for rank in 0..world {
            let r = partition(len, rank, world).unwrap();
            prop_assert_eq!(r.start, next, "blocks are contiguous and in rank order");
            next = r.end;
            sizes.push(r.len());
            for i in r {
                seen[i] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&c| c == 1));
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        prop_assert!(hi - lo <= 1);
    }

    #[test]
    fn shuffled_epochs_split_exactly_and_repeat(len in 0usize..2000, world in 1usize..=8, seed: u64, epoch in 0u64..5) {
        let mut seen = vec![0u8; len];
        for rank in 0..world {
            let s = Sampler::new(len, rank, world, Some(seed)).unwrap();
            let a = s.epoch(epoch);
            prop_assert_eq!(&a, &s.epoch(epoch), "deterministic");
            prop_assert_eq!(a.len(), s.len());
            for i in a {
                seen[i] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&c| c == 1));
        let mut p = Vec::new();
        permutation_into(len, seed, epoch, &mut p);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..len).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Real files: the reader finds exactly the offsets `format::layout` predicts, and global
    /// indices map onto (shard, record) in order.
    #[test]
    fn written_shards_match_the_layout(lengths in prop::collection::vec(0usize..300, 1..30), shard_size in 1usize..8) {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Rec> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| (i as u32, [1, 1, n as u32], (0..n).map(|k| (k + i) as u8).collect()))
            .collect();
        let m = write(dir.path(), Encoding::RawU8, shard_size, &recs);
        let ds = Dataset::open_mapped(dir.path()).unwrap();
        let mut global = 0;
        for (k, info) in m.shards.iter().enumerate() {
            let shard = Shard::open(&dir.path().join(&info.file), &OpenOptions::new()).unwrap();
            let lens: Vec<u64> = (0..shard.len()).map(|j| shard.entry(j).unwrap().length).collect();
            let (offsets, index_offset) = format::layout(&lens).unwrap();
            prop_assert_eq!(format::file_len(index_offset, lens.len() as u64).unwrap(), info.bytes);
            for (j, &offset) in offsets.iter().enumerate() {
                prop_assert_eq!(shard.entry(j).unwrap().offset, offset);
                prop_assert_eq!(ds.locate(global).unwrap(), (k, j));
                prop_assert_eq!(ds.get(global).unwrap().payload, &recs[global].2[..]);
                global += 1;
            }
        }
        prop_assert_eq!(global, lengths.len());
    }
}
