//! The setup screen's knobs: which experiment setting each row edits, how
//! it is labelled and named in validation errors, how it reads as text, how
//! a notch up or down moves it, and how typed text sets it.

use crate::config::{Choice, ConfigError, Experiment, HostOptimizer, MethodKind, Routing, Task};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Model,
    Task,
    Train,
    Method,
    Neurons,
    TopK,
    Experts,
    Probe,
    Routing,
    HostOptimizer,
    Lr,
    Steps,
    Epochs,
    Batch,
    MicroBatch,
    Cutoff,
    Seed,
    Device,
}

pub const FIELDS: [Field; 19] = [
    Field::Name,
    Field::Model,
    Field::Task,
    Field::Train,
    Field::Method,
    Field::Neurons,
    Field::TopK,
    Field::Experts,
    Field::Probe,
    Field::Routing,
    Field::HostOptimizer,
    Field::Lr,
    Field::Steps,
    Field::Epochs,
    Field::Batch,
    Field::MicroBatch,
    Field::Cutoff,
    Field::Seed,
    Field::Device,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    /// One of these spellings (the schema's, in order).
    Choice(Vec<&'static str>),
    Number,
}

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Name => "Preset",
            Field::Model => "Model",
            Field::Task => "Task",
            Field::Train => "Train data",
            Field::Method => "Method",
            Field::Neurons => "Neurons M",
            Field::TopK => "Top-K",
            Field::Experts => "Experts E",
            Field::Probe => "Probe P",
            Field::Routing => "Routing",
            Field::HostOptimizer => "Host optim",
            Field::Lr => "LR",
            Field::Steps => "Steps",
            Field::Epochs => "Epochs",
            Field::Batch => "Batch",
            Field::MicroBatch => "Micro-batch",
            Field::Cutoff => "Cutoff",
            Field::Seed => "Seed",
            Field::Device => "Device",
        }
    }

    /// The config path validation errors name.
    pub fn path(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Model => "model.reference",
            Field::Task => "data.task",
            Field::Train => "data.train",
            Field::Method => "method.kind",
            Field::Neurons => "method.meft.neurons",
            Field::TopK => "method.meft.top_k",
            Field::Experts => "method.meft.experts",
            Field::Probe => "method.meft.probe",
            Field::Routing => "method.meft.routing",
            Field::HostOptimizer => "method.meft.host_optimizer",
            Field::Lr => "train.lr",
            Field::Steps => "train.steps",
            Field::Epochs => "train.epochs",
            Field::Batch => "train.batch",
            Field::MicroBatch => "train.micro_batch",
            Field::Cutoff => "train.cutoff_len",
            Field::Seed => "train.seed",
            Field::Device => "model.device",
        }
    }

    pub(super) fn kind(self) -> Kind {
        match self {
            Field::Name | Field::Model | Field::Train | Field::Device => Kind::Text,
            Field::Task => Kind::Choice(Task::names()),
            Field::Method => Kind::Choice(MethodKind::names()),
            Field::Routing => Kind::Choice(Routing::names()),
            Field::HostOptimizer => Kind::Choice(HostOptimizer::names()),
            _ => Kind::Number,
        }
    }

    pub(super) fn meft_only(self) -> bool {
        matches!(
            self,
            Field::Neurons
                | Field::TopK
                | Field::Experts
                | Field::Probe
                | Field::Routing
                | Field::HostOptimizer
        )
    }

    /// The value as typed into the field.
    pub fn get(self, e: &Experiment) -> String {
        match self {
            // Rates read best in scientific notation, epochs without ".0".
            Field::Lr => format!("{:e}", e.train.lr),
            Field::Epochs => e.train.epochs.to_string(),
            _ => e.get(self.path()).unwrap_or_default(),
        }
    }

    /// One notch up or down: multiplicative where the knob spans decades.
    pub fn step(self, e: &mut Experiment, up: bool) {
        let m = &mut e.method.meft;
        let t = &mut e.train;
        let double = |v: usize, min: usize| {
            if up {
                v.saturating_mul(2).max(min)
            } else {
                (v / 2).max(min)
            }
        };
        match self.kind() {
            Kind::Text => {}
            Kind::Choice(options) => {
                let current = self.get(e);
                let i = options.iter().position(|o| *o == current).unwrap_or(0);
                let n = options.len();
                let next = if up { (i + 1) % n } else { (i + n - 1) % n };
                let _ = self.set(e, options[next]);
            }
            Kind::Number => match self {
                Field::Neurons => m.neurons = next_valid_neurons(m, up),
                Field::TopK => m.top_k = double(m.top_k, 1),
                Field::Experts => {
                    // Only divisors of M are valid; below the smallest, 0 = derive from M.
                    let current = m.resolved_experts();
                    m.experts = match next_divisor(m.neurons, current, up) {
                        Some(e) => e,
                        None if !up && m.experts > 0 => 0,
                        None => m.experts,
                    };
                }
                Field::Probe => {
                    m.probe = if up {
                        m.probe + 1
                    } else {
                        m.probe.saturating_sub(1).max(1)
                    }
                }
                Field::Lr => t.lr = one_two_five(t.lr, up),
                Field::Steps => t.steps = one_two_five(t.steps as f64, up).round() as usize,
                Field::Epochs => {
                    t.epochs = if up {
                        t.epochs.floor() + 1.0
                    } else {
                        (t.epochs.ceil() - 1.0).max(0.0)
                    }
                }
                Field::Batch => t.batch = double(t.batch, 1),
                Field::MicroBatch => {
                    t.micro_batch =
                        next_divisor(t.batch, t.micro_batch, up).unwrap_or(t.micro_batch)
                }
                Field::Cutoff => t.cutoff_len = double(t.cutoff_len, 4),
                Field::Seed => {
                    t.seed = if up {
                        t.seed.wrapping_add(1)
                    } else {
                        t.seed.saturating_sub(1)
                    }
                }
                _ => {}
            },
        }
    }
}

impl Field {
    /// Set from typed text, as `--set` sets the same path; the error says
    /// what the field expects.
    pub fn set(self, e: &mut Experiment, text: &str) -> Result<(), String> {
        match e.set(self.path(), text.trim()) {
            Ok(()) => Ok(()),
            Err(ConfigError::Field { msg, .. }) => Err(msg),
            Err(other) => Err(other.to_string()),
        }
    }
}

/// The next value in the 1-2-5 series (…, 1e-3, 2e-3, 5e-3, 1e-2, …).
fn one_two_five(v: f64, up: bool) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return if up { 1.0 } else { v };
    }
    let decade = 10f64.powf(v.log10().floor());
    let series = [1.0, 2.0, 5.0, 10.0, 20.0];
    let rel = v / decade;
    let next = if up {
        series
            .iter()
            .find(|&&s| s > rel * (1.0 + 1e-9))
            .copied()
            .unwrap_or(10.0)
    } else {
        series
            .iter()
            .rev()
            .find(|&&s| s < rel * (1.0 - 1e-9))
            .copied()
            .unwrap_or(0.5)
    };
    // Round away float noise so 3e-3 reads "3e-3", not 2.9999999e-3.
    let out = next * decade;
    let digits = 10f64.powf(-(out.log10().floor()) + 3.0);
    (out * digits).round() / digits
}

/// The sizes ◀▶ steps M through: powers of two, and the paper's M (3600
/// for Mistral, 6144 for its traffic setting, 8464 for LLaMA-7B).
fn neuron_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (8..=20).map(|p| 1usize << p).collect();
    v.extend([3600, 6144, 8464]);
    v.sort_unstable();
    v
}

/// The next size users pick above or below M (M itself when at the end).
fn next_valid_neurons(m: &crate::config::MeftSection, up: bool) -> usize {
    let sizes = neuron_sizes();
    let next = if up {
        sizes.iter().find(|&&s| s > m.neurons)
    } else {
        sizes.iter().rev().find(|&&s| s < m.neurons)
    };
    next.copied().unwrap_or(m.neurons)
}

/// The next divisor of `n` above or below `current`, if any.
fn next_divisor(n: usize, current: usize, up: bool) -> Option<usize> {
    let mut divisors = (1..=n).filter(|d| n.is_multiple_of(*d));
    if up {
        divisors.find(|&d| d > current)
    } else {
        divisors.take_while(|&d| d < current).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_and_steps_move_along_1_2_5() {
        assert_eq!(one_two_five(1e-3, true), 2e-3);
        assert_eq!(one_two_five(2e-3, true), 5e-3);
        assert_eq!(one_two_five(5e-3, true), 1e-2);
        assert_eq!(one_two_five(1e-3, false), 5e-4);
        assert_eq!(one_two_five(200.0, true), 500.0);
    }

    #[test]
    fn neurons_step_through_powers_of_two_and_the_papers_m() {
        let mut e = Experiment::default();
        assert_eq!(e.method.meft.neurons, 4096);
        let mut seen = Vec::new();
        for _ in 0..4 {
            Field::Neurons.step(&mut e, true);
            seen.push(e.method.meft.neurons);
            assert!(e.validate().is_ok(), "{seen:?}");
        }
        assert_eq!(seen, [6144, 8192, 8464, 16384]);
        Field::Neurons.step(&mut e, false);
        assert_eq!(e.method.meft.neurons, 8464);
    }

    #[test]
    fn experts_step_through_divisors() {
        let mut e = Experiment::default();
        e.method.meft.experts = 256;
        Field::Experts.step(&mut e, true);
        assert_eq!(e.method.meft.experts, 512);
        Field::Experts.step(&mut e, false);
        Field::Experts.step(&mut e, false);
        assert_eq!(e.method.meft.experts, 128);
    }

    #[test]
    fn every_field_sets_as_set_does() {
        let sample = |f: Field| match f {
            Field::Name => "my run",
            Field::Model => "gguf:/models/smol.gguf",
            Field::Task => "squad",
            Field::Train => "synth:entities=50,seed=3",
            Field::Method => "lora",
            Field::Neurons => "8192",
            Field::TopK => "64",
            Field::Experts => "128",
            Field::Probe => "4",
            Field::Routing => "full",
            Field::HostOptimizer => "dense",
            Field::Lr => "3e-4",
            Field::Steps => "500",
            Field::Epochs => "2.5",
            Field::Batch => "16",
            Field::MicroBatch => "4",
            Field::Cutoff => "128",
            Field::Seed => "7",
            Field::Device => "cuda:0",
        };
        for f in FIELDS {
            let mut by_screen = Experiment::default();
            let by_flag = Experiment::default()
                .apply_sets(&[format!("{}={}", f.path(), sample(f))])
                .unwrap_or_else(|e| panic!("{}: {e}", f.path()));
            assert_eq!(f.set(&mut by_screen, sample(f)), Ok(()), "{}", f.path());
            assert_eq!(by_screen, by_flag, "{}", f.path());
            assert_ne!(
                by_screen,
                Experiment::default(),
                "{} changed nothing",
                f.path()
            );
            assert_eq!(f.get(&by_screen), sample(f), "{} reads back", f.path());
        }
    }

    #[test]
    fn typed_values_are_checked() {
        let mut e = Experiment::default();
        assert!(Field::Neurons.set(&mut e, "abc").is_err());
        assert!(Field::Method.set(&mut e, "adapter").is_err());
        assert!(Field::Lr.set(&mut e, "3e-4").is_ok());
        assert_eq!(e.train.lr, 3e-4);
    }
}
