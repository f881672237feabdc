//! The bad-input corpus of the net files (issue #16), generated here from small nets written by
//! the tests: truncated and bit-flipped caffemodels and solverstates, prototxt syntax errors,
//! unknown layer types, prototxt/caffemodel shape mismatches, mean files of the wrong shape,
//! stage-gated inputs. Each must be an `Err` naming the file and the layer (no panic), must leave
//! the net it was loaded into unchanged, and the commands must leave no partial output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle::Device;
use sparknet_net::load::{parse_net_text, read_caffemodel, read_net_prototxt, read_solverstate};
use sparknet_net::preprocess::{Preprocess, image_to_blob};
use sparknet_net::proto::{BlobProto, BlobShape, SolverParameter};
use sparknet_net::solver::Solver;
use sparknet_net::{Error, Net, NetConfig, Phase};

/// A tiny net with two learnable layers (Convolution, InnerProduct) after an Input.
fn net_text(conv_outputs: usize) -> String {
    format!(
        "name: 'tiny'
layer {{ name: 'data' type: 'Input' top: 'data'
        input_param {{ shape {{ dim: 2 dim: 1 dim: 5 dim: 5 }} }} }}
layer {{ name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'
        convolution_param {{ num_output: {conv_outputs} kernel_size: 3
                            weight_filler {{ type: 'gaussian' std: 0.1 }} }} }}
layer {{ name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }}
layer {{ name: 'ip' type: 'InnerProduct' bottom: 'conv' top: 'ip'
        inner_product_param {{ num_output: 3 weight_filler {{ type: 'xavier' }} }} }}
"
    )
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny net built from `dir/net.prototxt`, and its weights saved as `dir/good.caffemodel`.
fn tiny(dir: &Path) -> (PathBuf, PathBuf, Net) {
    let model = dir.join("net.prototxt");
    write(&model, net_text(2));
    let net = Net::from_files(&model, None, NetConfig::default()).unwrap();
    let weights = dir.join("good.caffemodel");
    net.save_caffemodel(&weights).unwrap();
    (model, weights, net)
}

/// Every parameter value, flattened in net order.
fn values(net: &Net) -> Vec<u32> {
    let mut out = Vec::new();
    for blobs in net.params().values() {
        for t in blobs {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            out.extend(v.iter().map(|x| x.to_bits()));
        }
    }
    out
}

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparknet-net")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn truncated_caffemodel_is_an_error_naming_the_file_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good, _) = tiny(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let cut_file = dir.path().join("cut.caffemodel");
    let mut net =
        Net::from_files(&model, None, NetConfig { seed: Some(7), ..Default::default() }).unwrap();
    let mut before = values(&net);
    let (mut errors, mut shorter) = (0, 0);
    for cut in 0..bytes.len() {
        write(&cut_file, &bytes[..cut]);
        match net.copy_from_file(&cut_file) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with(s(&cut_file)), "cut {cut}: {msg}");
                assert_eq!(values(&net), before, "cut {cut}: a failed load changed the net");
                errors += 1;
            }
            // Only a cut between two top-level fields decodes; what it lacks is named.
            Ok(missing) => {
                assert!(!missing.is_empty(), "cut {cut} of {} loaded as complete", bytes.len());
                assert!(missing.iter().all(|l| l == "conv" || l == "ip"), "{missing:?}");
                shorter += 1;
                // What the shorter model held was copied: that is the net's state now.
                before = values(&net);
            }
        }
    }
    assert!(errors > bytes.len() * 9 / 10, "{errors} errors, {shorter} shorter models");
    // The whole file loads with nothing missing.
    assert_eq!(net.copy_from_file(&good).unwrap(), Vec::<String>::new());
}

#[test]
fn bit_flipped_caffemodel_never_panics_and_every_error_names_file_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good, _) = tiny(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let flipped = dir.path().join("flipped.caffemodel");
    let mut net = Net::from_files(&model, None, NetConfig::default()).unwrap();
    let before = values(&net);
    let mut errors = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x10, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            write(&flipped, &b);
            let Err(e) = net.copy_from_file(&flipped) else {
                // A flip inside float data or a name is not detectable: the file has no checksum.
                net.copy_from_file(&good).unwrap();
                continue;
            };
            errors += 1;
            let msg = e.to_string();
            assert!(msg.starts_with(s(&flipped)), "byte {i} ^ {mask:#x}: {msg}");
            // A shape or count problem names the layer (as the flipped file names it).
            if let Error::ShapeMismatch { layer, .. } | Error::BlobCount { layer, .. } =
                e.innermost()
            {
                assert!(msg.contains(&format!("layer '{layer}'")), "{msg}");
            }
            assert_eq!(values(&net), before, "byte {i} ^ {mask:#x}: a failed load changed the net");
        }
    }
    assert!(errors > 0);
}

#[test]
fn shape_mismatch_between_prototxt_and_caffemodel_names_file_layer_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, good, _) = tiny(dir.path());
    let other = dir.path().join("other.prototxt");
    write(&other, net_text(4));
    let err = Net::from_files(&other, Some(&good), NetConfig::default()).err().unwrap();
    let msg = err.to_string();
    assert!(
        matches!(err.innermost(), Error::ShapeMismatch { layer, expected, got, .. }
            if layer == "conv" && expected == &[4, 1, 3, 3] && got == &[2, 1, 3, 3]),
        "{msg}"
    );
    assert!(msg.starts_with(s(&good)) && msg.contains("layer 'conv'"), "{msg}");

    // The command that would write a file writes nothing.
    let to = dir.path().join("out.caffemodel");
    let o = bin(&["export", "--model", s(&other), "--weights", s(&good), "--to", s(&to)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("layer 'conv'"), "{}", stderr(&o));
    assert!(!to.exists(), "no partial output");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn caffemodel_truncated_between_layers_is_named_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good, net) = tiny(dir.path());
    // Keep the layers up to `conv`: a valid protobuf, but with no `ip` weights.
    let mut proto = read_caffemodel(&good).unwrap();
    proto.layer.truncate(2);
    let short = dir.path().join("short.caffemodel");
    write(&short, prost::Message::encode_to_vec(&proto));
    assert_eq!(net.layers_without_weights(&proto), ["ip"]);
    let o = bin(&["inspect", s(&model), "--weights", s(&short)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(s(&short)) && err.contains("'ip'"), "{err}");
}

#[test]
fn prototxt_syntax_errors_give_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.prototxt");
    // (text, line, column, a word the message must contain)
    let cases: &[(&str, usize, usize, &str)] = &[
        ("name: 'n'\nlayer {\n  name: 'a'\n  type: 'ReLU'\n", 5, 1, ""),
        ("layer {\n  name: 'a'\n  top: \"unterminated\n}\n", 3, 21, "string"),
        ("layer {\n  name: 'a'\n  type: 'ReLU'\n  bogus: 1\n}\n", 4, 3, "bogus"),
        (
            "layer { name: 'c' type: 'Convolution'\n convolution_param { num_output: many } }\n",
            2,
            34,
            "",
        ),
        (
            "layer { name: 'p' type: 'Pooling'\n\n pooling_param { pool: MEDIAN } }\n",
            3,
            24,
            "MEDIAN",
        ),
        ("layer { name: 'a' }\n}\n", 2, 1, ""),
    ];
    let mut wrong = Vec::new();
    for (text, line, col, word) in cases {
        write(&path, text);
        let err = read_net_prototxt(&path).unwrap_err();
        let msg = err.to_string();
        let want = format!("{}:{line}:{col}: ", path.display());
        if !msg.starts_with(&want) || !msg.contains(word) {
            wrong.push(format!("{text:?}: expected {want}... with {word:?}, got {msg}"));
        }
        assert!(matches!(err, Error::Parse { line_col: Some(_), .. }), "{msg}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn unknown_layer_type_names_layer_type_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unknown.prototxt");
    write(
        &path,
        "layer { name: 'data' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 2 } } }\n\
         layer { name: 'magic' type: 'FancyNewLayer' bottom: 'x' top: 'y' }\n",
    );
    let err = Net::from_files(&path, None, NetConfig::default()).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("layer 'magic'") && msg.contains("'FancyNewLayer'") && msg.contains(s(&path)),
        "{msg}"
    );
    let o = bin(&["inspect", s(&path)]);
    assert!(!o.status.success() && stderr(&o).contains("FancyNewLayer"), "{}", stderr(&o));
}

#[test]
fn stage_gated_input_names_the_producers_and_their_stages() {
    let net = parse_net_text(
        "layer { name: 'train_data' type: 'Input' top: 'data' include { phase: TRAIN }
                input_param { shape { dim: 1 dim: 4 } } }
         layer { name: 'test_data' type: 'Input' top: 'data'
                 include { phase: TEST stage: 'test-on-test' }
                 input_param { shape { dim: 1 dim: 4 } } }
         layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
                 inner_product_param { num_output: 2 } }",
        Path::new("gated.prototxt"),
    )
    .unwrap();
    let err = Net::new(&net, NetConfig { phase: Phase::Test, ..Default::default() })
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("layer 'ip': bottom blob 'data'"), "{err}");
    assert!(err.contains("layer 'train_data' (needs phase TRAIN)"), "{err}");
    assert!(err.contains("layer 'test_data' (needs phase TEST and stage 'test-on-test')"), "{err}");
    assert!(err.contains("--stage test-on-test"), "{err}");
    let staged = NetConfig { stages: vec!["test-on-test".into()], ..Default::default() };
    assert!(Net::new(&net, staged).is_ok());
}

#[test]
fn mnist_autoencoder_test_phase_asks_for_a_stage() {
    let Some(assets) = sparknet_testkit::assets_dir("mnist_autoencoder_stage") else { return };
    let model = assets.join("prototxt/bvlc_caffe/examples/mnist/mnist_autoencoder.prototxt");
    let o = bin(&["inspect", s(&model)]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("mnist_autoencoder.prototxt"), "names the file: {err}");
    assert!(err.contains("bottom blob 'data'"), "{err}");
    for want in ["stage 'test-on-train'", "stage 'test-on-test'", "--stage test-on-test"] {
        assert!(err.contains(want), "{want}: {err}");
    }
    for stage in ["test-on-test", "test-on-train"] {
        let o = bin(&["inspect", s(&model), "--stage", stage]);
        assert!(o.status.success(), "--stage {stage}: {}", stderr(&o));
    }
    let o = bin(&["inspect", s(&model), "--phase", "train"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A solver over a tiny loss net, snapshotting into `dir`.
fn tiny_solver(dir: &Path) -> Solver {
    let net = parse_net_text(
        "layer { name: 'data' type: 'Input' top: 'data' top: 'label'
                 input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }
         layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip'
                 inner_product_param { num_output: 3 weight_filler { type: 'xavier' } } }
         layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }",
        Path::new("solver-net"),
    )
    .unwrap();
    let param = SolverParameter {
        net_param: Some(net),
        base_lr: Some(0.1),
        momentum: Some(0.9),
        lr_policy: Some("fixed".into()),
        max_iter: Some(10),
        snapshot_prefix: Some(dir.join("tiny").to_string_lossy().into_owned()),
        ..Default::default()
    };
    Solver::from_param(&param, NetConfig::default()).unwrap()
}

#[test]
fn truncated_or_flipped_solverstate_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut solver = tiny_solver(dir.path());
    let (_, state) = solver.snapshot().unwrap();
    let bytes = std::fs::read(&state).unwrap();
    let bad = dir.path().join("bad.solverstate");
    let mut fresh = tiny_solver(dir.path());
    fresh.restore(&state).unwrap();
    let mut errors = 0;
    let mut check = |b: &[u8], what: &str| {
        write(&bad, b);
        match fresh.restore(&bad) {
            Ok(()) => {}
            Err(e) => {
                errors += 1;
                let msg = e.to_string();
                assert!(msg.contains(s(&bad)), "{what}: {msg}");
            }
        }
    };
    for cut in 0..bytes.len() {
        check(&bytes[..cut], &format!("cut {cut}"));
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x80;
        check(&b, &format!("byte {i} ^ 0x80"));
    }
    assert!(errors > bytes.len(), "{errors}");
    // A bare decode names the file too.
    write(&bad, &bytes[..bytes.len() / 2]);
    let msg = read_solverstate(&bad).unwrap_err().to_string();
    assert!(msg.starts_with(s(&bad)) && msg.contains("SolverState"), "{msg}");
}

#[test]
fn mean_file_of_the_wrong_shape_or_bytes_names_the_mean_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("px.png");
    image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([x as u8, y as u8, 9])).save(&img).unwrap();
    let mean = dir.path().join("mean.binaryproto");
    let blob = |dims: &[i64]| BlobProto {
        shape: Some(BlobShape { dim: dims.to_vec() }),
        data: vec![1.0; dims.iter().product::<i64>() as usize],
        ..Default::default()
    };
    for (dims, word) in [(&[1i64, 1, 4, 4][..], "channels"), (&[3, 4][..], "shape")] {
        write(&mean, prost::Message::encode_to_vec(&blob(dims)));
        let p = Preprocess { mean_file: Some(mean.clone()), ..Default::default() };
        let msg = image_to_blob(&img, 3, &p, &Device::Cpu).unwrap_err().to_string();
        assert!(msg.starts_with(s(&mean)) && msg.contains(word), "{dims:?}: {msg}");
    }
    let good = prost::Message::encode_to_vec(&blob(&[1, 3, 4, 4]));
    write(&mean, &good[..good.len() - 3]);
    let p = Preprocess { mean_file: Some(mean.clone()), ..Default::default() };
    let msg = image_to_blob(&img, 3, &p, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.starts_with(s(&mean)), "{msg}");
    write(&mean, &good);
    assert!(image_to_blob(&img, 3, &p, &Device::Cpu).is_ok());
}

#[test]
fn forward_with_bad_weights_writes_no_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let (model, good, _) = tiny(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.caffemodel");
    write(&cut, &bytes[..bytes.len() - 5]);
    let out = dir.path().join("blobs");
    let o = bin(&["forward", "--model", s(&model), "--weights", s(&cut), "--out", s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(s(&cut)), "{}", stderr(&o));
    let written = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "no partial output");
}
