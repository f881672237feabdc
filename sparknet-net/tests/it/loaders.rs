//! Binary loaders on the real shared files: mean `.binaryproto`, `.solverstate`, V1 and V2
//! `.caffemodel`s, solver prototxts.

use sparknet_net::blob::{blob_data, blob_shape};
use sparknet_net::load::{
    read_binaryproto, read_caffemodel, read_solver_prototxt, read_solverstate,
};

#[test]
fn mean_file_solverstate_and_caffemodels() {
    let Some(assets) = sparknet_testkit::assets_dir("loaders") else { return };
    let mean = read_binaryproto(assets.join("models/cifar10_quick/mean.binaryproto")).unwrap();
    assert_eq!(blob_shape(&mean), vec![1, 3, 32, 32]);
    let m = blob_data(&mean);
    let red = m[..1024].iter().map(|&v| f64::from(v)).sum::<f64>() / 1024.0;
    assert!((red - 125.31).abs() < 0.01, "first plane is R as the reference states: {red}");

    let state =
        read_solverstate(assets.join("models/lenet_mnist/lenet_iter_10000.solverstate")).unwrap();
    assert_eq!(state.iter(), 10000);
    assert_eq!(state.history.len(), 8, "momentum history for LeNet's 8 blobs");

    let v1 =
        read_caffemodel(assets.join("models/cifar10_quick/cifar10_quick_iter_5000.caffemodel"))
            .unwrap();
    assert!(v1.layers.is_empty(), "V1 upgraded");
    let conv1 = v1.layer.iter().find(|l| l.name() == "conv1").unwrap();
    assert_eq!(conv1.r#type(), "Convolution");
    assert_eq!(blob_shape(&conv1.blobs[0]), vec![32, 3, 5, 5]);
    assert_eq!(conv1.param.len(), 2, "blobs_lr became ParamSpecs");
    assert_eq!(conv1.param[1].lr_mult(), 2.0);

    let solver =
        read_solver_prototxt(assets.join("models/lenet_mnist/lenet_solver.prototxt")).unwrap();
    assert_eq!(solver.lr_policy(), "inv");
    assert_eq!(solver.max_iter(), 10000);
    assert_eq!(solver.r#type(), "SGD");

    let err =
        read_caffemodel(assets.join("models/lenet_mnist/lenet.prototxt")).unwrap_err().to_string();
    assert!(err.contains("lenet.prototxt") && err.contains("not a valid binary"), "{err}");
}
