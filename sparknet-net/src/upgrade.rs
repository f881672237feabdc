//! Upgrading legacy net definitions to the current form, following Caffe's `upgrade_proto` rules:
//! - V1 `layers` (enum types, `blobs_lr`/`weight_decay`, named `param`s) become V2 `layer`s
//!   (type strings, `ParamSpec`s);
//! - V0 layers (nested `layer { type: "conv" ... }`) are first turned into V1 entries;
//! - data-layer `scale`/`mean_file`/`crop_size`/`mirror` move into `transform_param`;
//! - net-level `input` + `input_shape`/`input_dim` become one `Input` layer named `input`.

use std::path::Path;

use crate::proto::{
    self, BlobShape, InputParameter, LayerParameter, NetParameter, ParamSpec,
    TransformationParameter, V0LayerParameter, V1LayerParameter, v1_layer_parameter::LayerType,
};
use crate::{Error, Result};

/// Caffe's V1 enum -> type string mapping (`UpgradeV1LayerType`).
pub fn v1_type_name(t: LayerType) -> &'static str {
    use LayerType::*;
    match t {
        None => "",
        Absval => "AbsVal",
        Accuracy => "Accuracy",
        Argmax => "ArgMax",
        Bnll => "BNLL",
        Concat => "Concat",
        ContrastiveLoss => "ContrastiveLoss",
        Convolution => "Convolution",
        Deconvolution => "Deconvolution",
        Data => "Data",
        Dropout => "Dropout",
        DummyData => "DummyData",
        EuclideanLoss => "EuclideanLoss",
        Eltwise => "Eltwise",
        Exp => "Exp",
        Flatten => "Flatten",
        Hdf5Data => "HDF5Data",
        Hdf5Output => "HDF5Output",
        HingeLoss => "HingeLoss",
        Im2col => "Im2col",
        ImageData => "ImageData",
        InfogainLoss => "InfogainLoss",
        InnerProduct => "InnerProduct",
        Lrn => "LRN",
        MemoryData => "MemoryData",
        MultinomialLogisticLoss => "MultinomialLogisticLoss",
        Mvn => "MVN",
        Pooling => "Pooling",
        Power => "Power",
        Relu => "ReLU",
        Sigmoid => "Sigmoid",
        SigmoidCrossEntropyLoss => "SigmoidCrossEntropyLoss",
        Silence => "Silence",
        Softmax => "Softmax",
        SoftmaxLoss => "SoftmaxWithLoss",
        Split => "Split",
        Slice => "Slice",
        Tanh => "TanH",
        WindowData => "WindowData",
        Threshold => "Threshold",
    }
}

/// Upgrades `net` in place of Caffe's `UpgradeNetAsNeeded`. `path` labels errors.
///
/// # Errors
/// A net mixing `layer` and `layers`, or a V0 layer type with no V1 equivalent.
pub fn upgrade_net(mut net: NetParameter, path: &Path) -> Result<NetParameter> {
    if !net.layers.is_empty() {
        if !net.layer.is_empty() {
            return Err(Error::parse(path, "net uses both 'layer' (V2) and 'layers' (V1) fields"));
        }
        let layers = std::mem::take(&mut net.layers);
        for v1 in layers {
            let v1 = match &v1.layer {
                Some(v0) => upgrade_v0(v0, &v1, path)?,
                None => v1,
            };
            net.layer.push(upgrade_v1(v1));
        }
    }
    for layer in &mut net.layer {
        upgrade_data_transform(layer);
    }
    upgrade_inputs(&mut net, path)?;
    Ok(net)
}

/// One V1 layer to V2 (`UpgradeV1LayerParameter`).
fn upgrade_v1(v1: V1LayerParameter) -> LayerParameter {
    let kind = v1_type_name(v1.r#type()).to_string();
    let n_params = v1
        .param
        .len()
        .max(v1.blob_share_mode.len())
        .max(v1.blobs_lr.len())
        .max(v1.weight_decay.len());
    let mut param = Vec::with_capacity(n_params);
    for i in 0..n_params {
        let mut spec = ParamSpec::default();
        if let Some(name) = v1.param.get(i) {
            spec.name = Some(name.clone());
        }
        if let Some(&mode) = v1.blob_share_mode.get(i) {
            spec.share_mode = Some(mode);
        }
        if let Some(&lr) = v1.blobs_lr.get(i) {
            spec.lr_mult = Some(lr);
        }
        if let Some(&decay) = v1.weight_decay.get(i) {
            spec.decay_mult = Some(decay);
        }
        param.push(spec);
    }
    LayerParameter {
        name: v1.name,
        r#type: Some(kind),
        bottom: v1.bottom,
        top: v1.top,
        include: v1.include,
        exclude: v1.exclude,
        blobs: v1.blobs,
        param,
        loss_weight: v1.loss_weight,
        accuracy_param: v1.accuracy_param,
        argmax_param: v1.argmax_param,
        concat_param: v1.concat_param,
        contrastive_loss_param: v1.contrastive_loss_param,
        convolution_param: v1.convolution_param,
        data_param: v1.data_param,
        dropout_param: v1.dropout_param,
        dummy_data_param: v1.dummy_data_param,
        eltwise_param: v1.eltwise_param,
        exp_param: v1.exp_param,
        hdf5_data_param: v1.hdf5_data_param,
        hdf5_output_param: v1.hdf5_output_param,
        hinge_loss_param: v1.hinge_loss_param,
        image_data_param: v1.image_data_param,
        infogain_loss_param: v1.infogain_loss_param,
        inner_product_param: v1.inner_product_param,
        lrn_param: v1.lrn_param,
        memory_data_param: v1.memory_data_param,
        mvn_param: v1.mvn_param,
        pooling_param: v1.pooling_param,
        power_param: v1.power_param,
        relu_param: v1.relu_param,
        sigmoid_param: v1.sigmoid_param,
        softmax_param: v1.softmax_param,
        slice_param: v1.slice_param,
        tanh_param: v1.tanh_param,
        threshold_param: v1.threshold_param,
        window_data_param: v1.window_data_param,
        transform_param: v1.transform_param,
        loss_param: v1.loss_param,
        ..Default::default()
    }
}

/// A V0 layer (nested inside a V1 entry that holds its bottoms/tops) to V1 (`UpgradeV0LayerParameter`).
fn upgrade_v0(
    v0: &V0LayerParameter,
    outer: &V1LayerParameter,
    path: &Path,
) -> Result<V1LayerParameter> {
    let name = v0.name.clone().unwrap_or_default();
    let kind = v0.r#type.clone().unwrap_or_default();
    let mut v1 = V1LayerParameter {
        name: Some(name.clone()),
        bottom: outer.bottom.clone(),
        top: outer.top.clone(),
        blobs: v0.blobs.clone(),
        blobs_lr: v0.blobs_lr.clone(),
        weight_decay: v0.weight_decay.clone(),
        ..Default::default()
    };
    let t = match kind.as_str() {
        "conv" => {
            v1.convolution_param = Some(proto::ConvolutionParameter {
                num_output: v0.num_output,
                bias_term: Some(v0.biasterm()),
                weight_filler: v0.weight_filler.clone(),
                bias_filler: v0.bias_filler.clone(),
                pad: vec![v0.pad()],
                kernel_size: v0.kernelsize.into_iter().collect(),
                group: Some(v0.group()),
                stride: vec![v0.stride()],
                ..Default::default()
            });
            LayerType::Convolution
        }
        "innerproduct" => {
            v1.inner_product_param = Some(proto::InnerProductParameter {
                num_output: v0.num_output,
                bias_term: Some(v0.biasterm()),
                weight_filler: v0.weight_filler.clone(),
                bias_filler: v0.bias_filler.clone(),
                ..Default::default()
            });
            LayerType::InnerProduct
        }
        "pool" => {
            v1.pooling_param = Some(proto::PoolingParameter {
                pool: Some(v0.pool() as i32),
                kernel_size: v0.kernelsize,
                stride: Some(v0.stride()),
                pad: Some(v0.pad()),
                ..Default::default()
            });
            LayerType::Pooling
        }
        "lrn" => {
            v1.lrn_param = Some(proto::LrnParameter {
                local_size: Some(v0.local_size()),
                alpha: Some(v0.alpha()),
                beta: Some(v0.beta()),
                k: Some(v0.k()),
                ..Default::default()
            });
            LayerType::Lrn
        }
        "dropout" => {
            v1.dropout_param =
                Some(proto::DropoutParameter { dropout_ratio: Some(v0.dropout_ratio()) });
            LayerType::Dropout
        }
        "data" => {
            v1.data_param = Some(proto::DataParameter {
                source: v0.source.clone(),
                batch_size: v0.batchsize,
                rand_skip: v0.rand_skip,
                ..Default::default()
            });
            v1.transform_param = Some(TransformationParameter {
                scale: v0.scale,
                mean_file: v0.meanfile.clone(),
                crop_size: v0.cropsize,
                mirror: v0.mirror,
                ..Default::default()
            });
            LayerType::Data
        }
        "concat" => {
            v1.concat_param =
                Some(proto::ConcatParameter { concat_dim: v0.concat_dim, ..Default::default() });
            LayerType::Concat
        }
        "relu" => LayerType::Relu,
        "sigmoid" => LayerType::Sigmoid,
        "tanh" => LayerType::Tanh,
        "softmax" => LayerType::Softmax,
        "softmax_loss" => LayerType::SoftmaxLoss,
        "accuracy" => LayerType::Accuracy,
        "flatten" => LayerType::Flatten,
        "split" => LayerType::Split,
        "bnll" => LayerType::Bnll,
        "euclidean_loss" => LayerType::EuclideanLoss,
        "multinomial_logistic_loss" => LayerType::MultinomialLogisticLoss,
        "infogain_loss" => LayerType::InfogainLoss,
        "im2col" => LayerType::Im2col,
        other => {
            return Err(Error::parse(
                path,
                format!("layer '{name}': V0 layer type '{other}' cannot be upgraded (unsupported)"),
            ));
        }
    };
    v1.r#type = Some(t as i32);
    Ok(v1)
}

/// Moves legacy data-layer transformation fields into `transform_param`
/// (`UpgradeNetDataTransformation`).
fn upgrade_data_transform(layer: &mut LayerParameter) {
    let mut moved = TransformationParameter::default();
    let mut any = false;
    if let Some(p) = layer.data_param.as_mut() {
        any |= take_legacy(
            &mut p.scale,
            &mut p.mean_file,
            &mut p.crop_size,
            &mut p.mirror,
            &mut moved,
        );
    }
    if let Some(p) = layer.image_data_param.as_mut() {
        any |= take_legacy(
            &mut p.scale,
            &mut p.mean_file,
            &mut p.crop_size,
            &mut p.mirror,
            &mut moved,
        );
    }
    if let Some(p) = layer.window_data_param.as_mut() {
        any |= take_legacy(
            &mut p.scale,
            &mut p.mean_file,
            &mut p.crop_size,
            &mut p.mirror,
            &mut moved,
        );
    }
    if any {
        let t = layer.transform_param.get_or_insert_with(Default::default);
        t.scale = t.scale.or(moved.scale);
        t.mean_file = t.mean_file.take().or(moved.mean_file);
        t.crop_size = t.crop_size.or(moved.crop_size);
        t.mirror = t.mirror.or(moved.mirror);
    }
}

fn take_legacy(
    scale: &mut Option<f32>,
    mean_file: &mut Option<String>,
    crop_size: &mut Option<u32>,
    mirror: &mut Option<bool>,
    out: &mut TransformationParameter,
) -> bool {
    let any = scale.is_some() || mean_file.is_some() || crop_size.is_some() || mirror.is_some();
    out.scale = out.scale.or(scale.take());
    out.mean_file = out.mean_file.take().or(mean_file.take());
    out.crop_size = out.crop_size.or(crop_size.take());
    out.mirror = out.mirror.or(mirror.take());
    any
}

/// Net-level `input`/`input_shape`/`input_dim` become an `Input` layer (`UpgradeNetInput`).
fn upgrade_inputs(net: &mut NetParameter, path: &Path) -> Result<()> {
    if net.input.is_empty() {
        return Ok(());
    }
    let n = net.input.len();
    let shapes: Vec<BlobShape> = if !net.input_shape.is_empty() {
        if net.input_shape.len() != n {
            return Err(Error::parse(
                path,
                format!("{n} inputs but {} input_shape entries", net.input_shape.len()),
            ));
        }
        net.input_shape.clone()
    } else if !net.input_dim.is_empty() {
        if net.input_dim.len() != 4 * n {
            return Err(Error::parse(
                path,
                format!(
                    "{n} inputs need {} input_dim values (4 each), got {}",
                    4 * n,
                    net.input_dim.len()
                ),
            ));
        }
        net.input_dim
            .chunks(4)
            .map(|c| BlobShape { dim: c.iter().map(|&d| i64::from(d)).collect() })
            .collect()
    } else {
        // Inputs without shapes: shapes come from the caller at reshape time.
        Vec::new()
    };
    let layer = LayerParameter {
        name: Some("input".to_string()),
        r#type: Some("Input".to_string()),
        top: std::mem::take(&mut net.input),
        input_param: Some(InputParameter { shape: shapes }),
        ..Default::default()
    };
    net.input_shape.clear();
    net.input_dim.clear();
    net.layer.insert(0, layer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_net_text;

    #[test]
    fn v1_layers_become_v2_with_param_specs() {
        let text = "layers { name: 'c' type: CONVOLUTION bottom: 'd' top: 'c' blobs_lr: 1 blobs_lr: 2 \
                    weight_decay: 1 weight_decay: 0 convolution_param { num_output: 4 kernel_size: 3 } }\n\
                    layers { name: 'l' type: SOFTMAX_LOSS bottom: 'c' bottom: 'y' top: 'loss' }";
        let net = parse_net_text(text, Path::new("v1")).unwrap();
        assert!(net.layers.is_empty());
        assert_eq!(net.layer[0].r#type(), "Convolution");
        assert_eq!(net.layer[0].param.len(), 2);
        assert_eq!(net.layer[0].param[1].lr_mult(), 2.0);
        assert_eq!(net.layer[0].param[1].decay_mult(), 0.0);
        assert_eq!(net.layer[1].r#type(), "SoftmaxWithLoss");
    }

    #[test]
    fn input_dim_becomes_input_layer() {
        let text = "input: 'data' input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 9";
        let net = parse_net_text(text, Path::new("i")).unwrap();
        assert_eq!(net.layer[0].r#type(), "Input");
        assert_eq!(net.layer[0].top, vec!["data".to_string()]);
        assert_eq!(net.layer[0].input_param.as_ref().unwrap().shape[0].dim, vec![1, 3, 8, 9]);
        let bad = parse_net_text("input: 'data' input_dim: 1 input_dim: 3", Path::new("i"));
        assert!(bad.unwrap_err().to_string().contains("need 4 input_dim values"));
    }

    #[test]
    fn v0_layers_upgrade() {
        let text = "layers { layer { name: 'c' type: 'conv' num_output: 2 kernelsize: 3 stride: 2 } \
                    bottom: 'd' top: 'c' }";
        let net = parse_net_text(text, Path::new("v0")).unwrap();
        let conv = net.layer[0].convolution_param.as_ref().unwrap();
        assert_eq!(net.layer[0].r#type(), "Convolution");
        assert_eq!(
            (conv.num_output(), conv.kernel_size.clone(), conv.stride.clone()),
            (2, vec![3], vec![2])
        );
    }

    #[test]
    fn data_transform_fields_move() {
        let text = "layer { name: 'd' type: 'Data' top: 'x' data_param { source: 's' batch_size: 4 scale: 0.5 } }";
        let net = parse_net_text(text, Path::new("d")).unwrap();
        assert_eq!(net.layer[0].transform_param.as_ref().unwrap().scale(), 0.5);
        assert_eq!(net.layer[0].data_param.as_ref().unwrap().scale, None);
    }
}
