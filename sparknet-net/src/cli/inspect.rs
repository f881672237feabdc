//! `sparknet-net inspect MODEL`: layers, types, top shapes and parameter counts.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sparknet_net::Result;

use super::{NetArgs, PhaseArg, parse_shape_arg};
use sparknet_net::layers::Shape;

/// Flags of `inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Net definition (.prototxt).
    model: PathBuf,
    /// Trained weights to check against the definition.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Phase whose layers are built.
    #[arg(long, value_enum, default_value_t = PhaseArg::Test)]
    phase: PhaseArg,
    /// Net stage for include/exclude rules (repeatable).
    #[arg(long)]
    stage: Vec<String>,
    /// Shape of a fed blob, NAME=N,C,H,W (repeatable).
    #[arg(long = "data-shape", value_parser = parse_shape_arg)]
    data_shape: Vec<(String, Shape)>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn shape_text(s: &Option<Shape>) -> String {
    match s {
        Some(s) => format!("[{}]", s.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")),
        None => "?".to_string(),
    }
}

/// Runs `inspect`.
pub fn run(a: &InspectArgs) -> Result<()> {
    let net = super::build_net_with_seed(
        &NetArgs {
            model: a.model.clone(),
            weights: a.weights.clone(),
            phase: a.phase,
            stage: a.stage.clone(),
            data_shape: a.data_shape.clone(),
            seed: 0,
            fill_missing: false,
            no_fusion: false,
        },
        None,
    )?;
    let infos = net.layer_infos();
    let count = |p: &Option<Vec<Shape>>| {
        p.as_ref().map(|v| v.iter().map(|s| s.iter().product::<usize>()).sum::<usize>())
    };
    let total: usize = infos.iter().filter_map(|i| count(&i.params)).sum();
    let unknown = infos.iter().any(|i| i.params.is_none() && i.tops.iter().any(|t| t.1.is_none()));
    if a.json {
        let layers: Vec<_> = infos
            .iter()
            .map(|i| {
                json!({
                    "name": i.name, "type": i.kind, "bottoms": i.bottoms, "auto_split": i.auto_split,
                    "tops": i.tops.iter().map(|(n, s)| json!({"name": n, "shape": s})).collect::<Vec<_>>(),
                    "params": i.params, "param_count": count(&i.params),
                })
            })
            .collect();
        let out = json!({
            "name": net.graph().name, "phase": format!("{:?}", net.phase()), "layers": layers,
            "inputs": net.input_names(), "outputs": net.output_names(),
            "total_params": total, "shapes_complete": !unknown,
        });
        say!("{out}");
        return Ok(());
    }
    say!("net '{}' ({:?}): {} layers", net.graph().name, net.phase(), infos.len());
    say!("{:<28} {:<18} {:<40} {:>10}", "layer", "type", "tops", "params");
    for i in &infos {
        let tops = i
            .tops
            .iter()
            .map(|(n, s)| format!("{n} {}", shape_text(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let params = count(&i.params).map_or_else(|| "?".to_string(), |c| c.to_string());
        say!("{:<28} {:<18} {:<40} {:>10}", i.name, i.kind, tops, params);
    }
    say!(
        "total parameters: {total}{}",
        if unknown { " (some shapes unknown: give --data-shape)" } else { "" }
    );
    Ok(())
}
