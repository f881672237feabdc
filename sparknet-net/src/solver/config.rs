//! Solver settings: the fields of Caffe's `SolverParameter` that shape a parameter update.

/// Which update rule a solver applies (`SolverParameter.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverKind {
    /// Stochastic gradient descent with momentum (`"SGD"`).
    Sgd,
    /// Nesterov's accelerated gradient (`"Nesterov"`).
    Nesterov,
    /// AdaGrad (`"AdaGrad"`).
    AdaGrad,
    /// RMSProp (`"RMSProp"`).
    RmsProp,
    /// AdaDelta (`"AdaDelta"`).
    AdaDelta,
    /// Adam (`"Adam"`).
    Adam,
}

impl SolverKind {
    /// Parses Caffe's type string (`"SGD"`, `"Nesterov"`, ...), case-insensitively.
    pub fn from_caffe(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sgd" => Self::Sgd,
            "nesterov" => Self::Nesterov,
            "adagrad" => Self::AdaGrad,
            "rmsprop" => Self::RmsProp,
            "adadelta" => Self::AdaDelta,
            "adam" => Self::Adam,
            _ => return None,
        })
    }

    /// Caffe's type string.
    pub fn caffe_name(self) -> &'static str {
        match self {
            Self::Sgd => "SGD",
            Self::Nesterov => "Nesterov",
            Self::AdaGrad => "AdaGrad",
            Self::RmsProp => "RMSProp",
            Self::AdaDelta => "AdaDelta",
            Self::Adam => "Adam",
        }
    }

    /// How many history buffers (each the size of all parameters) the rule keeps.
    /// AdaDelta and Adam keep two, as Caffe's solverstate stores them (first all of
    /// `history`, then all of the second set).
    pub fn history_sets(self) -> usize {
        match self {
            Self::AdaDelta | Self::Adam => 2,
            _ => 1,
        }
    }
}

/// The learning-rate schedule (`SolverParameter.lr_policy`).
#[derive(Debug, Clone, PartialEq)]
pub enum LrPolicy {
    /// `base_lr`.
    Fixed,
    /// `base_lr * gamma ^ floor(iter / stepsize)`.
    Step {
        /// `gamma`.
        gamma: f64,
        /// `stepsize`.
        stepsize: u64,
    },
    /// `base_lr * gamma ^ iter`.
    Exp {
        /// `gamma`.
        gamma: f64,
    },
    /// `base_lr * (1 + gamma * iter) ^ (-power)`.
    Inv {
        /// `gamma`.
        gamma: f64,
        /// `power`.
        power: f64,
    },
    /// `base_lr * gamma ^ (number of stepvalues <= iter)`.
    MultiStep {
        /// `gamma`.
        gamma: f64,
        /// `stepvalue`, ascending.
        stepvalues: Vec<u64>,
    },
    /// `base_lr * (1 - iter / max_iter) ^ power`.
    Poly {
        /// `power`.
        power: f64,
        /// `max_iter`.
        max_iter: u64,
    },
    /// `base_lr / (1 + exp(-gamma * (iter - stepsize)))`.
    Sigmoid {
        /// `gamma`.
        gamma: f64,
        /// `stepsize`.
        stepsize: u64,
    },
}

/// Weight-decay flavour (`SolverParameter.regularization_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regularization {
    /// `diff += decay * w` (Caffe's default, `"L2"`).
    L2,
    /// `diff += decay * sign(w)` (`"L1"`).
    L1,
}

/// Everything the update rule needs from a solver prototxt; defaults follow `caffe.proto`.
#[derive(Debug, Clone, PartialEq)]
pub struct SolverConfig {
    /// Update rule.
    pub kind: SolverKind,
    /// `base_lr`.
    pub base_lr: f64,
    /// `lr_policy` with its parameters.
    pub lr_policy: LrPolicy,
    /// `momentum` (also AdaDelta's decay and Adam's beta1).
    pub momentum: f64,
    /// `momentum2` (Adam's beta2; default 0.999).
    pub momentum2: f64,
    /// `delta` (numerical guard; default 1e-8).
    pub delta: f64,
    /// `rms_decay` (RMSProp; default 0.99).
    pub rms_decay: f64,
    /// `weight_decay`.
    pub weight_decay: f64,
    /// `regularization_type`.
    pub regularization: Regularization,
    /// `clip_gradients`: the L2-norm bound of all gradients, negative for none (default -1).
    pub clip_gradients: f64,
    /// `iter_size`: forward/backward passes accumulated per update (default 1).
    pub iter_size: u32,
}

impl Default for SolverConfig {
    fn default() -> Self {
        Self {
            kind: SolverKind::Sgd,
            base_lr: 0.01,
            lr_policy: LrPolicy::Fixed,
            momentum: 0.0,
            momentum2: 0.999,
            delta: 1e-8,
            rms_decay: 0.99,
            weight_decay: 0.0,
            regularization: Regularization::L2,
            clip_gradients: -1.0,
            iter_size: 1,
        }
    }
}

impl SolverConfig {
    /// The update settings of a solver prototxt: `type` (or the legacy `solver_type` enum when
    /// only it is given), every `lr_policy` with its parameters, momentum/momentum2/delta/
    /// rms_decay, weight decay with `regularization_type`, `clip_gradients` and `iter_size`.
    ///
    /// # Errors
    /// An unknown solver type, lr policy or regularization, or a policy missing its parameters.
    pub fn from_proto(p: &crate::proto::SolverParameter) -> crate::Result<SolverConfig> {
        use crate::proto::solver_parameter::SolverType;
        let bad = |field: &str, reason: String| crate::Error::invalid("solver", field, reason);
        let kind = match (&p.r#type, p.solver_type) {
            (None, Some(_)) => match p.solver_type() {
                SolverType::Sgd => SolverKind::Sgd,
                SolverType::Nesterov => SolverKind::Nesterov,
                SolverType::Adagrad => SolverKind::AdaGrad,
                SolverType::Rmsprop => SolverKind::RmsProp,
                SolverType::Adadelta => SolverKind::AdaDelta,
                SolverType::Adam => SolverKind::Adam,
            },
            _ => SolverKind::from_caffe(p.r#type())
                .ok_or_else(|| bad("type", format!("unknown solver type '{}'", p.r#type())))?,
        };
        let gamma = f64::from(p.gamma());
        let need = |field: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(bad(field, format!("required by lr_policy '{}'", p.lr_policy())))
            }
        };
        let lr_policy = match p.lr_policy() {
            "" | "fixed" => LrPolicy::Fixed,
            "step" => {
                need("stepsize", p.stepsize.is_some_and(|s| s > 0))?;
                LrPolicy::Step { gamma, stepsize: p.stepsize() as u64 }
            }
            "exp" => LrPolicy::Exp { gamma },
            "inv" => LrPolicy::Inv { gamma, power: f64::from(p.power()) },
            "multistep" => LrPolicy::MultiStep {
                gamma,
                stepvalues: p.stepvalue.iter().map(|&s| s.max(0) as u64).collect(),
            },
            "poly" => {
                LrPolicy::Poly { power: f64::from(p.power()), max_iter: p.max_iter().max(0) as u64 }
            }
            "sigmoid" => {
                need("stepsize", p.stepsize.is_some())?;
                LrPolicy::Sigmoid { gamma, stepsize: p.stepsize().max(0) as u64 }
            }
            other => return Err(bad("lr_policy", format!("unknown policy '{other}'"))),
        };
        let regularization = match p.regularization_type() {
            "L2" => Regularization::L2,
            "L1" => Regularization::L1,
            other => return Err(bad("regularization_type", format!("unknown '{other}'"))),
        };
        if p.iter_size() < 1 {
            return Err(bad("iter_size", format!("{} (must be at least 1)", p.iter_size())));
        }
        Ok(SolverConfig {
            kind,
            base_lr: f64::from(p.base_lr()),
            lr_policy,
            momentum: f64::from(p.momentum()),
            momentum2: f64::from(p.momentum2()),
            delta: f64::from(p.delta()),
            rms_decay: f64::from(p.rms_decay()),
            weight_decay: f64::from(p.weight_decay()),
            regularization,
            clip_gradients: f64::from(p.clip_gradients()),
            iter_size: p.iter_size() as u32,
        })
    }
}
