//! Caffe's learning-rate schedules (`SGDSolver::GetLearningRate`).

use super::config::LrPolicy;

impl LrPolicy {
    /// The learning rate at iteration `iter`, for `base_lr`.
    ///
    /// `MultiStep` counts the step values already passed, which is what Caffe's `current_step`
    /// records in its solverstate ([`LrPolicy::multistep_index`]).
    pub fn rate(&self, base_lr: f64, iter: u64) -> f64 {
        let it = iter as f64;
        match self {
            Self::Fixed => base_lr,
            Self::Step { gamma, stepsize } => {
                base_lr * gamma.powf((iter / (*stepsize).max(1)) as f64)
            }
            Self::Exp { gamma } => base_lr * gamma.powf(it),
            Self::Inv { gamma, power } => base_lr * (1.0 + gamma * it).powf(-power),
            Self::MultiStep { gamma, .. } => {
                base_lr * gamma.powi(self.multistep_index(iter) as i32)
            }
            Self::Poly { power, max_iter } => {
                let frac = 1.0 - it / (*max_iter).max(1) as f64;
                base_lr * frac.max(0.0).powf(*power)
            }
            Self::Sigmoid { gamma, stepsize } => {
                base_lr / (1.0 + (-gamma * (it - *stepsize as f64)).exp())
            }
        }
    }

    /// For `MultiStep`, how many step values are `<= iter` (Caffe's `current_step`); 0 otherwise.
    pub fn multistep_index(&self, iter: u64) -> usize {
        match self {
            Self::MultiStep { stepvalues, .. } => {
                stepvalues.iter().take_while(|&&s| iter >= s).count()
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn schedules_follow_caffe_formulas() {
        let lr = 0.01;
        close(LrPolicy::Fixed.rate(lr, 12345), 0.01);
        let step = LrPolicy::Step { gamma: 0.1, stepsize: 100 };
        close(step.rate(lr, 99), 0.01);
        close(step.rate(lr, 100), 0.001);
        close(step.rate(lr, 250), 0.01 * 0.01);
        close(LrPolicy::Exp { gamma: 0.5 }.rate(lr, 3), 0.01 * 0.125);
        // lenet_solver.prototxt: inv, gamma 1e-4, power 0.75.
        let inv = LrPolicy::Inv { gamma: 1e-4, power: 0.75 };
        close(inv.rate(lr, 10000), 0.01 * 2f64.powf(-0.75));
        let ms = LrPolicy::MultiStep { gamma: 0.1, stepvalues: vec![10, 20] };
        close(ms.rate(1.0, 9), 1.0);
        close(ms.rate(1.0, 10), 0.1);
        close(ms.rate(1.0, 25), 0.01);
        assert_eq!(ms.multistep_index(19), 1);
        let poly = LrPolicy::Poly { power: 2.0, max_iter: 100 };
        close(poly.rate(1.0, 50), 0.25);
        close(poly.rate(1.0, 100), 0.0);
        let sig = LrPolicy::Sigmoid { gamma: 0.5, stepsize: 10 };
        close(sig.rate(1.0, 10), 0.5);
    }
}
