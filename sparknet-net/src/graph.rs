//! The net's IR: the layers that survive the phase/level/stage rules, in order, over named blobs,
//! with Caffe's implicit `Split` layers inserted where one blob feeds several layers.
//!
//! Invariants: every bottom names a blob produced by an earlier layer (checked here, with the
//! layer's name in the error); in-place layers (a top equal to a bottom) re-define the name, so a
//! later reader of that name sees the in-place result; split tops are named as Caffe names them,
//! `<blob>_<producer>_<top index>_split_<i>`.

use std::collections::HashMap;

use crate::error::Producer;
use crate::proto::{LayerParameter, NetParameter, NetState, NetStateRule, Phase};
use crate::{Error, Result};

/// One layer of the IR.
#[derive(Debug, Clone)]
pub struct LayerNode {
    /// The layer's name.
    pub name: String,
    /// The Caffe type string (`"Convolution"`, ...).
    pub kind: String,
    /// Bottom blob names (after split renaming).
    pub bottoms: Vec<String>,
    /// Top blob names.
    pub tops: Vec<String>,
    /// The full (upgraded) layer definition.
    pub param: LayerParameter,
    /// True for a `Split` inserted by [`NetGraph::build`], not written in the net file.
    pub auto_split: bool,
}

/// A filtered, split-inserted net definition.
#[derive(Debug, Clone)]
pub struct NetGraph {
    /// The net's `name`.
    pub name: String,
    /// Layers in execution order.
    pub layers: Vec<LayerNode>,
}

/// The net state a phase gets by default (Caffe: `NetState { phase }`, level 0, no stages).
pub fn state_for(phase: Phase) -> NetState {
    NetState { phase: Some(phase as i32), level: Some(0), stage: Vec::new() }
}

/// Caffe's `Net::StateMeetsRule`.
pub fn state_meets_rule(state: &NetState, rule: &NetStateRule) -> bool {
    if rule.phase.is_some() && rule.phase() != state.phase() {
        return false;
    }
    if rule.min_level.is_some() && state.level() < rule.min_level() {
        return false;
    }
    if rule.max_level.is_some() && state.level() > rule.max_level() {
        return false;
    }
    if rule.stage.iter().any(|s| !state.stage.contains(s)) {
        return false;
    }
    if rule.not_stage.iter().any(|s| state.stage.contains(s)) {
        return false;
    }
    true
}

/// Caffe's `Net::FilterNet` decision for one layer.
///
/// # Errors
/// A layer that has both include and exclude rules.
pub fn layer_included(state: &NetState, layer: &LayerParameter) -> Result<bool> {
    if !layer.include.is_empty() && !layer.exclude.is_empty() {
        return Err(Error::invalid(
            layer.name(),
            "include/exclude",
            "both specified; use one or the other",
        ));
    }
    if !layer.include.is_empty() {
        return Ok(layer.include.iter().any(|r| state_meets_rule(state, r)));
    }
    Ok(!layer.exclude.iter().any(|r| state_meets_rule(state, r)))
}

/// A net state in words: `phase TEST, level 0, no stages`.
pub fn state_text(state: &NetState) -> String {
    let stages = if state.stage.is_empty() {
        "no stages".to_string()
    } else {
        let names: Vec<String> = state.stage.iter().map(|s| format!("'{s}'")).collect();
        format!("stage {}", names.join(", "))
    };
    format!("phase {}, level {}, {stages}", phase_name(state.phase()), state.level())
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Train => "TRAIN",
        Phase::Test => "TEST",
    }
}

/// One `include`/`exclude` rule in words: `phase TEST and stage 'test-on-test'`.
pub fn rule_text(rule: &NetStateRule) -> String {
    let mut parts = Vec::new();
    if rule.phase.is_some() {
        parts.push(format!("phase {}", phase_name(rule.phase())));
    }
    if rule.min_level.is_some() {
        parts.push(format!("level >= {}", rule.min_level()));
    }
    if rule.max_level.is_some() {
        parts.push(format!("level <= {}", rule.max_level()));
    }
    parts.extend(rule.stage.iter().map(|s| format!("stage '{s}'")));
    parts.extend(rule.not_stage.iter().map(|s| format!("no stage '{s}'")));
    if parts.is_empty() { "any net state".to_string() } else { parts.join(" and ") }
}

/// What a layer's rules need for it to be part of the net, in words.
fn needs_text(layer: &LayerParameter) -> String {
    if !layer.include.is_empty() {
        let rules: Vec<String> = layer.include.iter().map(rule_text).collect();
        return rules.join(", or ");
    }
    let rules: Vec<String> =
        layer.exclude.iter().map(|r| format!("not ({})", rule_text(r))).collect();
    rules.join(" and ")
}

/// The [`Error::MissingBlob`] for `reader` (at position `reader_at` of `net.layer`) reading
/// `blob`: every other layer that writes `blob` is named with what it would need.
fn missing_blob(
    net: &NetParameter,
    state: &NetState,
    reader: &LayerParameter,
    reader_at: usize,
    blob: &str,
) -> Error {
    let mut producers = Vec::new();
    for (j, layer) in net.layer.iter().enumerate() {
        if j == reader_at || !layer.top.iter().any(|t| t == blob) {
            continue;
        }
        let included = layer_included(state, layer).unwrap_or(false);
        if !included {
            let stages = layer
                .include
                .iter()
                .filter(|r| r.phase.is_none() || r.phase() == state.phase())
                .flat_map(|r| r.stage.iter().cloned())
                .collect();
            producers.push(Producer {
                layer: layer.name().to_string(),
                needs: needs_text(layer),
                stages,
            });
        } else if j > reader_at {
            producers.push(Producer {
                layer: layer.name().to_string(),
                needs: format!(
                    "to come before layer '{}': it is further down the file",
                    reader.name()
                ),
                stages: Vec::new(),
            });
        }
    }
    Error::MissingBlob {
        layer: reader.name().to_string(),
        blob: blob.to_string(),
        state: state_text(state),
        producers,
    }
}

/// Caffe's split-top naming.
pub fn split_blob_name(layer: &str, blob: &str, top_index: usize, split_index: usize) -> String {
    format!("{blob}_{layer}_{top_index}_split_{split_index}")
}

impl NetGraph {
    /// Filters `net` by `state` (the net's own `state` field overrides phase/level/stages when
    /// `state` is `None`) and inserts splits.
    ///
    /// # Errors
    /// Include+exclude conflicts and bottoms that no earlier layer produces.
    pub fn build(net: &NetParameter, state: Option<&NetState>) -> Result<NetGraph> {
        let state =
            state.cloned().or_else(|| net.state.clone()).unwrap_or_else(|| state_for(Phase::Test));
        let mut kept = Vec::new();
        let mut position = Vec::new();
        for (j, layer) in net.layer.iter().enumerate() {
            if layer_included(&state, layer)? {
                kept.push(layer.clone());
                position.push(j);
            }
        }
        // Resolve each bottom to the (layer, top) that last produced its name.
        let mut last_producer: HashMap<String, (usize, usize)> = HashMap::new();
        let mut bottom_src: Vec<Vec<(usize, usize)>> = Vec::with_capacity(kept.len());
        let mut readers: HashMap<(usize, usize), usize> = HashMap::new();
        for (i, layer) in kept.iter().enumerate() {
            let mut srcs = Vec::with_capacity(layer.bottom.len());
            for b in &layer.bottom {
                let src = *last_producer
                    .get(b)
                    .ok_or_else(|| missing_blob(net, &state, layer, position[i], b))?;
                *readers.entry(src).or_default() += 1;
                srcs.push(src);
            }
            bottom_src.push(srcs);
            for (j, t) in layer.top.iter().enumerate() {
                last_producer.insert(t.clone(), (i, j));
            }
        }
        let mut next_split: HashMap<(usize, usize), usize> = HashMap::new();
        let mut layers = Vec::with_capacity(kept.len());
        for (i, layer) in kept.iter().enumerate() {
            let mut bottoms = layer.bottom.clone();
            for (j, src) in bottom_src[i].iter().enumerate() {
                if readers[src] > 1 {
                    let k = next_split.entry(*src).or_default();
                    bottoms[j] = split_blob_name(kept[src.0].name(), &layer.bottom[j], src.1, *k);
                    *k += 1;
                }
            }
            layers.push(LayerNode {
                name: layer.name().to_string(),
                kind: layer.r#type().to_string(),
                bottoms,
                tops: layer.top.clone(),
                param: layer.clone(),
                auto_split: false,
            });
            for (j, top) in layer.top.iter().enumerate() {
                let count = readers.get(&(i, j)).copied().unwrap_or(0);
                if count > 1 {
                    let tops: Vec<String> =
                        (0..count).map(|k| split_blob_name(layer.name(), top, j, k)).collect();
                    let name = format!("{top}_{}_{j}_split", layer.name());
                    let param = LayerParameter {
                        name: Some(name.clone()),
                        r#type: Some("Split".to_string()),
                        bottom: vec![top.clone()],
                        top: tops.clone(),
                        ..Default::default()
                    };
                    layers.push(LayerNode {
                        name,
                        kind: "Split".to_string(),
                        bottoms: vec![top.clone()],
                        tops,
                        param,
                        auto_split: true,
                    });
                }
            }
        }
        Ok(NetGraph { name: net.name().to_string(), layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_net_text;
    use std::path::Path;

    const NET: &str = "
        layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 2 } } }
        layer { name: 'tr' type: 'ReLU' bottom: 'x' top: 'x' include { phase: TRAIN } }
        layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'x' }
        layer { name: 'a' type: 'TanH' bottom: 'x' top: 'a' }
        layer { name: 'b' type: 'Sigmoid' bottom: 'x' top: 'b' exclude { stage: 'deploy' } }";

    #[test]
    fn phase_rules_and_splits() {
        let net = parse_net_text(NET, Path::new("t")).unwrap();
        let g = NetGraph::build(&net, Some(&state_for(Phase::Test))).unwrap();
        let names: Vec<&str> = g.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["in", "r", "x_r_0_split", "a", "b"]);
        assert_eq!(g.layers[2].tops, ["x_r_0_split_0", "x_r_0_split_1"]);
        assert_eq!(g.layers[3].bottoms, ["x_r_0_split_0"]);
        assert_eq!(g.layers[4].bottoms, ["x_r_0_split_1"]);

        let train = NetGraph::build(&net, Some(&state_for(Phase::Train))).unwrap();
        assert_eq!(train.layers[1].name, "tr");
        let deploy = NetState { stage: vec!["deploy".into()], ..state_for(Phase::Test) };
        let g = NetGraph::build(&net, Some(&deploy)).unwrap();
        assert_eq!(g.layers.len(), 3, "no split once 'b' is excluded");
    }

    #[test]
    fn missing_bottom_names_the_layer() {
        let net = parse_net_text(
            "layer { name: 'r' type: 'ReLU' bottom: 'nope' top: 'y' }",
            Path::new("t"),
        )
        .unwrap();
        let err = NetGraph::build(&net, None).unwrap_err().to_string();
        assert_eq!(
            err,
            "layer 'r': bottom blob 'nope' is not produced by any earlier layer or input \
             in this net state (phase TEST, level 0, no stages)"
        );
    }

    #[test]
    fn missing_bottom_names_the_gated_and_later_producers() {
        let net = parse_net_text(
            "layer { name: 'a' type: 'Input' top: 'x' include { phase: TRAIN } }
             layer { name: 'b' type: 'Input' top: 'x' include { phase: TEST stage: 's1' }
                     include { stage: 's2' min_level: 1 } }
             layer { name: 'c' type: 'Input' top: 'x' exclude { phase: TEST } }
             layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'y' }
             layer { name: 'late' type: 'Input' top: 'x' }",
            Path::new("t"),
        )
        .unwrap();
        let err = NetGraph::build(&net, Some(&state_for(Phase::Test))).unwrap_err();
        let Error::MissingBlob { layer, blob, state, producers } = &err else {
            panic!("expected MissingBlob, got {err:?}");
        };
        assert_eq!((layer.as_str(), blob.as_str()), ("r", "x"));
        assert_eq!(state, "phase TEST, level 0, no stages");
        let got: Vec<(&str, &str, &[String])> = producers
            .iter()
            .map(|p| (p.layer.as_str(), p.needs.as_str(), p.stages.as_slice()))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                ("a", "phase TRAIN", &s(&[])[..]),
                (
                    "b",
                    "phase TEST and stage 's1', or level >= 1 and stage 's2'",
                    &s(&["s1", "s2"])[..]
                ),
                ("c", "not (phase TEST)", &s(&[])[..]),
                ("late", "to come before layer 'r': it is further down the file", &s(&[])[..]),
            ]
        );
        let text = err.to_string();
        assert!(text.ends_with("(select a stage with --stage s1 or --stage s2)"), "{text}");
        // With the stage the net builds.
        let st = NetState { stage: vec!["s1".into()], ..state_for(Phase::Test) };
        assert_eq!(NetGraph::build(&net, Some(&st)).unwrap().layers[0].name, "b");
    }

    #[test]
    fn levels_and_not_stage() {
        let state =
            NetState { phase: Some(Phase::Test as i32), level: Some(2), stage: vec!["s".into()] };
        let rule = NetStateRule { min_level: Some(3), ..Default::default() };
        assert!(!state_meets_rule(&state, &rule));
        let rule =
            NetStateRule { max_level: Some(2), not_stage: vec!["t".into()], ..Default::default() };
        assert!(state_meets_rule(&state, &rule));
        let rule = NetStateRule { not_stage: vec!["s".into()], ..Default::default() };
        assert!(!state_meets_rule(&state, &rule));
    }
}
