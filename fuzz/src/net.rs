//! Fuzz bodies for sparknet-net's readers: the prototxt parser (nets and solvers, then the IR
//! build under both phases), the binary caffemodel reader (then copying its blobs into a small
//! net), the solverstate reader (then restoring it into a solver of that net) and the
//! `.binaryproto` blob reader. Each body panics only when a reader breaks its contract: a panic
//! inside a reader, or an error that does not name the file it is about.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use prost::Message;
use sparknet_net::blob::blob_to_tensor_own;
use sparknet_net::graph::{NetGraph, state_for};
use sparknet_net::load::{
    decode_binaryproto, decode_caffemodel, decode_solverstate, parse_net_text, parse_text,
};
use sparknet_net::proto::{NetParameter, SolverParameter, SolverState};
use sparknet_net::solver::Solver;
use sparknet_net::{Error, Net, NetConfig, Phase};

/// The net the caffemodel and solverstate bodies load into (Input, Convolution, ReLU,
/// InnerProduct, SoftmaxWithLoss; two learnable layers).
pub const NET: &str = "name: 'fuzz'
layer { name: 'data' type: 'Input' top: 'data' top: 'label'
        input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } shape { dim: 2 } } }
layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: 'xavier' } } }
layer { name: 'relu' type: 'ReLU' bottom: 'conv' top: 'conv' }
layer { name: 'ip' type: 'InnerProduct' bottom: 'conv' top: 'ip'
        inner_product_param { num_output: 3 weight_filler { type: 'xavier' } } }
layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }
";

/// Panics unless `msg` starts with `path` (every reader error names its file first).
fn names(msg: &str, path: &Path) {
    let p = path.display().to_string();
    assert!(msg.starts_with(&p), "error does not name {p}: {msg}");
}

/// The prototxt parser: a net (upgraded), its IR in TRAIN and TEST, and a solver definition.
pub fn prototxt(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.prototxt");
    match parse_net_text(&text, path) {
        Err(e) => {
            if let Error::Parse { line_col: Some((line, col)), .. } = &e {
                assert!(*line >= 1 && *col >= 1, "{e}");
                assert!(*line <= text.split('\n').count(), "line {line} past the end: {e}");
            }
            names(&e.to_string(), path);
        }
        Ok(net) => {
            for phase in [Phase::Train, Phase::Test] {
                // An IR error names the layer; it is about the net, not the text.
                let _ = NetGraph::build(&net, Some(&state_for(phase)));
            }
        }
    }
    if let Err(e) = parse_text::<SolverParameter>("caffe.SolverParameter", &text, path) {
        names(&e.to_string(), path);
    }
}

struct Fixture {
    net: Net,
    solver: Solver,
    _dir: tempfile::TempDir,
    /// A good caffemodel of [`NET`], the `learned_net` of every fuzzed solverstate.
    weights: PathBuf,
    /// Where fuzzed solverstates are written for [`Solver::restore`].
    state: PathBuf,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fn fixture() -> Fixture {
    let param = parse_net_text(NET, Path::new("fuzz-net")).expect("the fixture net parses");
    let net = Net::new(&param, NetConfig::default()).expect("the fixture net builds");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let solver_param = SolverParameter {
        net_param: Some(param),
        base_lr: Some(0.01),
        momentum: Some(0.9),
        lr_policy: Some("fixed".into()),
        snapshot_prefix: Some(dir.path().join("fuzz").to_string_lossy().into_owned()),
        ..Default::default()
    };
    let mut solver = Solver::from_param(&solver_param, NetConfig::default()).expect("solver");
    let (weights, _) = solver.snapshot().expect("the fixture snapshot");
    let state = dir.path().join("fuzzed.solverstate");
    Fixture { net, solver, _dir: dir, weights, state }
}

/// A caffemodel of [`NET`] and a solverstate of its solver (momentum SGD), as seeds.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    FIXTURE.with(|f| {
        let f = f.borrow();
        let model = std::fs::read(&f.weights).expect("fixture caffemodel");
        let state_path = f.weights.with_extension("solverstate");
        let state = std::fs::read(state_path).expect("fixture solverstate");
        vec![("caffemodel", model), ("solverstate", state), ("prototxt", NET.as_bytes().to_vec())]
    })
}

/// The binary readers: the bytes as a caffemodel (copied into [`NET`]), as a solverstate
/// (restored into its solver) and as a `.binaryproto` blob.
pub fn caffemodel(data: &[u8]) {
    FIXTURE.with(|f| {
        let f = &mut *f.borrow_mut();
        let path = Path::new("fuzz.caffemodel");
        match decode_caffemodel(data, path) {
            Err(e) => names(&e.to_string(), path),
            Ok(weights) => {
                if let Err(e) = f.net.copy_from(&weights) {
                    assert!(e.to_string().contains("layer '"), "no layer named: {e}");
                }
                let _ = f.net.layers_without_weights(&weights);
            }
        }
        let path = Path::new("fuzz.solverstate");
        match decode_solverstate(data, path) {
            Err(e) => names(&e.to_string(), path),
            Ok(state) => {
                // The weights it names are the fixture's; the history and counters are fuzzed.
                let state = SolverState {
                    learned_net: Some(f.weights.to_string_lossy().into_owned()),
                    ..state
                };
                std::fs::write(&f.state, state.encode_to_vec()).expect("write the solverstate");
                if let Err(e) = f.solver.restore(&f.state) {
                    let msg = e.to_string();
                    assert!(msg.contains(&*f.state.to_string_lossy()), "file not named: {msg}");
                }
            }
        }
        let path = Path::new("fuzz.binaryproto");
        match decode_binaryproto(data, path) {
            Err(e) => names(&e.to_string(), path),
            Ok(blob) => {
                let _ = blob_to_tensor_own(&blob, &candle::Device::Cpu);
            }
        }
        // A net definition may also come as binary (`read_net_any`).
        let _ = NetParameter::decode(data);
    })
}
