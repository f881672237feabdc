//! Binding Data layers: sources, overrides, transforms, per-phase selection and errors.

use std::path::Path;

use sparknet_data::{ChannelOrder, DatasetConfig, DatasetWriter, Encoding, Mean, TransformParams};
use sparknet_mpi::Error;
use sparknet_mpi::bind::{FeedConfig, PhaseData, data_layers};
use sparknet_net::Phase;
use sparknet_net::load::parse_net_text;

const NET: &str = r#"
name: "bind"
layer { name: "train_in" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.5 mirror: true crop_size: 2 mean_value: 1 mean_value: 2 }
        data_param { source: "train_dir" batch_size: 3 } }
layer { name: "test_in" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.25 }
        data_param { source: "test_dir" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
"#;

#[test]
fn each_phase_binds_its_own_layer_with_its_transform() {
    let param = parse_net_text(NET, Path::new("bind.prototxt")).unwrap();
    let train = data_layers(&param, Phase::Train, None).unwrap();
    assert_eq!(train.len(), 1);
    assert_eq!(train[0].layer, "train_in");
    assert_eq!(train[0].tops, ["data", "label"]);
    assert_eq!(train[0].source, Path::new("train_dir"));
    assert_eq!(train[0].batch_size, 3);
    assert_eq!(
        train[0].transform,
        TransformParams {
            scale: 0.5,
            mirror: true,
            crop_size: 2,
            mean: Mean::Values(vec![1.0, 2.0]),
            ..TransformParams::default()
        }
    );
    let test = data_layers(&param, Phase::Test, Some(Path::new("elsewhere"))).unwrap();
    assert_eq!((test[0].layer.as_str(), test[0].batch_size), ("test_in", 4));
    assert_eq!(test[0].source, Path::new("elsewhere"), "the flag overrides data_param.source");
    assert_eq!(test[0].transform.scale, 0.25);
}

#[test]
fn missing_source_and_zero_batch_are_named_errors() {
    let text = r#"layer { name: "d" type: "Data" top: "x" data_param { batch_size: 2 } }"#;
    let param = parse_net_text(text, Path::new("n.prototxt")).unwrap();
    let err = data_layers(&param, Phase::Train, None).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("'d'") && m.contains("--train-data")));
    let text = r#"layer { name: "z" type: "Data" top: "x" data_param { source: "s" } }"#;
    let param = parse_net_text(text, Path::new("n.prototxt")).unwrap();
    let err = data_layers(&param, Phase::Train, None).unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("'z'") && m.contains("batch_size")));
    let text = r#"layer { name: "m" type: "Data" top: "x" data_param { source: "s" batch_size: 1 }
                  transform_param { mean_file: "/nonexistent/mean.binaryproto" } }"#;
    let param = parse_net_text(text, Path::new("n.prototxt")).unwrap();
    let err = data_layers(&param, Phase::Train, None).unwrap_err();
    let m = err.to_string();
    assert!(matches!(&err, Error::DataLayer { layer, .. } if layer == "m"), "{m}");
    assert!(m.contains("'m'") && m.contains("mean.binaryproto"), "{m}");
}

#[test]
fn a_source_that_is_not_a_dataset_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let param = parse_net_text(NET, Path::new("bind.prototxt")).unwrap();
    let specs = data_layers(&param, Phase::Test, Some(tmp.path())).unwrap();
    let feed = FeedConfig { rank: 0, world: 1, shuffle: None, seed: 0, threads: 1 };
    let err = PhaseData::open(&specs, Phase::Test, feed).unwrap_err();
    let m = err.to_string();
    assert!(matches!(&err, Error::DataLayer { layer, .. } if layer == "test_in"), "{m}");
    assert!(m.contains("test_in") && m.contains("sparknet-data convert"), "{m}");
}

/// Ten 1x2x2 images whose pixels are their index, labels `i % 3`; rank 1 of 2 reads 5..10.
#[test]
fn inputs_are_nchw_images_and_f32_labels_of_this_ranks_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let config = DatasetConfig {
        encoding: Encoding::RawU8,
        channel_order: ChannelOrder::Gray,
        classes: vec!["a".into(), "b".into(), "c".into()],
        shard_size: 4,
    };
    let mut w = DatasetWriter::create(tmp.path(), config).unwrap();
    for i in 0..10u8 {
        w.append(u32::from(i % 3), [1, 2, 2], &[i; 4]).unwrap();
    }
    w.finish().unwrap();
    let param = parse_net_text(NET, Path::new("bind.prototxt")).unwrap();
    let specs = data_layers(&param, Phase::Test, Some(tmp.path())).unwrap();
    let feed = FeedConfig { rank: 1, world: 2, shuffle: None, seed: 0, threads: 1 };
    let mut data = PhaseData::open(&specs, Phase::Test, feed).unwrap();
    assert_eq!((data.records(), data.batch_size()), (5, 4));
    let inputs = data.next_inputs(None).unwrap();
    assert_eq!(inputs["data"].dims(), [4, 1, 2, 2]);
    let x = inputs["data"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want: Vec<f32> = (5..9).flat_map(|i| [i as f32 * 0.25; 4]).collect();
    assert_eq!(x, want);
    assert_eq!(inputs["label"].to_vec1::<f32>().unwrap(), [2.0, 0.0, 1.0, 2.0]);
    // The partial last batch of the partition, then the next epoch starts at its beginning.
    let inputs = data.next_inputs(Some(1)).unwrap();
    assert_eq!(inputs["data"].dims(), [1, 1, 2, 2]);
    assert_eq!(inputs["label"].to_vec1::<f32>().unwrap(), [0.0]);
}
