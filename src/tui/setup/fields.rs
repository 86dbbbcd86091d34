//! The setup screen's knobs: which experiment setting each row edits, how
//! it is labelled and named in validation errors, how it reads as text, how
//! a notch up or down moves it, and how typed text sets it.

use crate::config::{Choice, ConfigError, Experiment, HostOptimizer, MethodKind, Routing, Task};
use crate::telemetry::plan::PAPER_UNION_FRACTION;
use crate::tui::{PlanKnobs, UnionAssumption};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Which preset the fields were loaded from (not part of the experiment).
    Preset,
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
    /// |U| the plan assumes (not part of the experiment).
    Union,
    /// The device memory the plan is checked against (not part of the experiment).
    GpuMem,
}

/// Every row in focus order: the experiment's knobs down the left, then
/// the plan's own two on the right.
pub const FIELDS: [Field; 22] = [
    Field::Preset,
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
    Field::Union,
    Field::GpuMem,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// One of the presets, picked from a list.
    Preset,
    Text,
    /// One of these spellings (the schema's, in order).
    Choice(Vec<&'static str>),
    Number,
}

impl Field {
    pub fn label(self) -> &'static str {
        match self {
            Field::Preset => "Preset",
            Field::Name => "Run name",
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
            Field::Union => "|U| assumed",
            Field::GpuMem => "GPU memory",
        }
    }

    /// The config path validation errors name.
    pub fn path(self) -> &'static str {
        match self {
            Field::Preset => "preset",
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
            Field::Union => "plan --union",
            Field::GpuMem => "plan --gpu-mem",
        }
    }

    /// Whether the row edits the experiment (rather than picking a preset
    /// or an assumption of the plan).
    pub fn is_config(self) -> bool {
        !matches!(self, Field::Preset | Field::Union | Field::GpuMem)
    }

    /// Whether the row sits with the plan on the right.
    pub(super) fn is_knob(self) -> bool {
        matches!(self, Field::Union | Field::GpuMem)
    }

    pub(super) fn kind(self) -> Kind {
        match self {
            Field::Preset => Kind::Preset,
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
            Kind::Text | Kind::Preset => {}
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

impl Field {
    /// What the knob does and which values it takes, for the focused row.
    pub fn help(self, e: &Experiment) -> String {
        let m = &e.method.meft;
        let experts = m.resolved_experts();
        match self {
            Field::Preset => {
                "a TOML under presets/: ◀▶ loads the next, Enter lists them all; w saves yours there"
                    .into()
            }
            Field::Name => "names the run directory: runs/<name>-<time>/".into(),
            Field::Model => {
                "the frozen base: embedded:tiny, hf:DIR, gguf:FILE, or builtin:NAME for a shape without weights"
                    .into()
            }
            Field::Task => {
                "the dataset format and its metrics; ◀▶ also loads that task's name, cutoff and data"
                    .into()
            }
            Field::Train => {
                "training rows: synth:entities=N,seed=S generates them in the task's format; or a file path"
                    .into()
            }
            Field::Method => {
                "meft: sparse rows in host memory · parallel: the dense adapter on the device · lora · full · none"
                    .into()
            }
            Field::Neurons => format!(
                "M, adapter neurons per layer, kept as rows in host memory; ◀▶ steps through powers of two and the paper's sizes (now {})",
                m.neurons
            ),
            Field::TopK => format!(
                "K, the neurons each token activates and whose rows it needs on the device; 1 to M ({})",
                m.neurons
            ),
            Field::Experts => format!(
                "E, groups of keys the router chooses among; must divide M; 0 picks one near √M × {}",
                m.expert_factor
            ),
            Field::Probe => format!(
                "P, the experts each token's router probes; only their keys are scored for the top K; 1 to E ({experts})"
            ),
            Field::Routing => {
                "key_experts: a router on the device picks P experts per token · full: every key is scored on the host"
                    .into()
            }
            Field::HostOptimizer => {
                "AdamW on the host rows. lazy: moments only for rows touched so far · dense: every row, every step"
                    .into()
            }
            Field::Lr => "the peak learning rate; ◀▶ steps along 1, 2, 5 × a power of ten".into(),
            Field::Steps => {
                "optimizer steps in the run; 0 leaves the length to Epochs".into()
            }
            Field::Epochs => {
                "passes over the training rows; used only when Steps is 0".into()
            }
            Field::Batch => "examples per optimizer step (at least 1)".into(),
            Field::MicroBatch => format!(
                "examples per forward pass; must divide Batch ({}); the rest is gradient accumulation",
                e.train.batch
            ),
            Field::Cutoff => "tokens per example, longer ones cut (at least 4); N = micro-batch × cutoff".into(),
            Field::Seed => "seeds the data order, the initial adapter and the synthetic data".into(),
            Field::Device => "where the base computes: cpu or cuda:N; the host store stays in host memory".into(),
            Field::Union => format!(
                "|U|, the rows one micro-batch gathers per layer: worst case min(M, N·K), a fraction of M (the paper measured {PAPER_UNION_FRACTION}), or what a run of this shape measured"
            ),
            Field::GpuMem => {
                "the device memory the fits column checks against; type a size such as 24GiB"
                    .into()
            }
        }
    }

    /// A plan knob's value as the row shows it.
    pub(super) fn knob_get(self, k: &PlanKnobs) -> String {
        match self {
            Field::Union => match k.union {
                UnionAssumption::WorstCase => "worst case".into(),
                UnionAssumption::Fraction(f) => format!("{f}·M"),
                UnionAssumption::Measured => "measured".into(),
            },
            Field::GpuMem => crate::units::bytes(k.gpu_mem),
            _ => String::new(),
        }
    }

    /// A notch up or down on a plan knob.
    pub(super) fn knob_step(self, k: &mut PlanKnobs, up: bool) {
        match self {
            Field::Union => {
                let options = union_options();
                let i = options.iter().position(|o| *o == k.union).unwrap_or(0);
                let n = options.len();
                k.union = options[if up { (i + 1) % n } else { (i + n - 1) % n }];
            }
            Field::GpuMem => {
                let sizes = GPU_SIZES_GIB.map(|g| g << 30);
                let next = if up {
                    sizes.iter().find(|&&s| s > k.gpu_mem)
                } else {
                    sizes.iter().rev().find(|&&s| s < k.gpu_mem)
                };
                k.gpu_mem = next.copied().unwrap_or(k.gpu_mem);
            }
            _ => {}
        }
    }

    /// A plan knob from typed text.
    pub(super) fn knob_set(self, k: &mut PlanKnobs, text: &str) -> Result<(), String> {
        let text = text.trim();
        match self {
            Field::Union => {
                k.union = match text {
                    "worst" | "worst case" => UnionAssumption::WorstCase,
                    "measured" => UnionAssumption::Measured,
                    "paper" => UnionAssumption::Fraction(PAPER_UNION_FRACTION),
                    _ => match text.trim_end_matches("·M").parse::<f64>() {
                        Ok(f) if (0.0..=1.0).contains(&f) => UnionAssumption::Fraction(f),
                        _ => {
                            return Err(format!(
                                "expected a fraction of M in [0, 1], worst, paper or measured, got {text:?}"
                            ))
                        }
                    },
                };
            }
            Field::GpuMem => {
                // A bare number is GiB.
                let parsed = match text.parse::<f64>() {
                    Ok(g) if g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
                    _ => crate::units::parse_bytes(text),
                };
                k.gpu_mem = parsed.filter(|&b| b > 0).ok_or_else(|| {
                    format!("expected a size such as 24GiB or 80GiB, got {text:?}")
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Card sizes ◀▶ steps the device memory through, in GiB.
const GPU_SIZES_GIB: [u64; 9] = [8, 12, 16, 24, 32, 40, 48, 80, 96];

/// The unions ◀▶ steps through: the worst case, fractions of M (the
/// paper's among them), and what a run measured.
fn union_options() -> Vec<UnionAssumption> {
    let mut v = vec![UnionAssumption::WorstCase];
    let mut fractions = vec![0.05, 0.1, 0.25, 0.5, PAPER_UNION_FRACTION, 0.75, 1.0];
    fractions.sort_by(f64::total_cmp);
    v.extend(fractions.into_iter().map(UnionAssumption::Fraction));
    v.push(UnionAssumption::Measured);
    v
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
            Field::Preset | Field::Union | Field::GpuMem => "",
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
        for f in FIELDS.into_iter().filter(|f| f.is_config()) {
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
    fn plan_knobs_step_and_parse() {
        let mut k = PlanKnobs {
            union: UnionAssumption::WorstCase,
            gpu_mem: 24 << 30,
        };
        Field::Union.knob_step(&mut k, false);
        assert_eq!(k.union, UnionAssumption::Measured);
        Field::Union.knob_step(&mut k, true);
        Field::Union.knob_step(&mut k, true);
        assert_eq!(k.union, UnionAssumption::Fraction(0.05));
        assert_eq!(Field::Union.knob_set(&mut k, "paper"), Ok(()));
        assert_eq!(Field::Union.knob_get(&k), "0.56·M");
        assert!(Field::Union.knob_set(&mut k, "1.5").is_err());
        Field::GpuMem.knob_step(&mut k, true);
        assert_eq!(k.gpu_mem, 32 << 30);
        assert_eq!(Field::GpuMem.knob_set(&mut k, "80"), Ok(()));
        assert_eq!(Field::GpuMem.knob_get(&k), "80 GiB");
        assert_eq!(Field::GpuMem.knob_set(&mut k, "512MiB"), Ok(()));
        assert_eq!(k.gpu_mem, 512 << 20);
        assert!(Field::GpuMem.knob_set(&mut k, "lots").is_err());
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
