//! Every closed choice of the experiment schema as an enum: its TOML
//! spelling, every value in order (what the setup screen steps through),
//! and parsing that says what was expected. The rooms that act on a choice
//! match on these, never on text.

use serde::{Deserialize, Serialize};

/// A closed choice: its values in order, and each one's spelling.
pub trait Choice: Copy + PartialEq + Sized + 'static {
    const ALL: &'static [Self];
    /// What the choice is, for messages ("task", "method").
    const KIND: &'static str;
    fn name(self) -> &'static str;

    /// Every spelling, for messages.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.name()).collect()
    }

    /// The value spelled `s`, or what was expected.
    fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown {} {s:?}, expected one of: {}",
                    Self::KIND,
                    Self::names().join(", ")
                )
            })
    }
}

/// Declares closed choices, each with its doc, its kind (for messages) and
/// its values' spellings, in one list.
macro_rules! choices {
    ($($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? })+) => {
        $(choice!($(#[$doc])* $name ($kind) { $($(#[$vdoc])* $variant = $text),+ });)+
    };
}

macro_rules! choice {
    ($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [Self] = &[$($name::$variant),+];

            /// The TOML spelling.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl Choice for $name {
            const ALL: &'static [Self] = $name::ALL;
            const KIND: &'static str = $kind;
            fn name(self) -> &'static str {
                $name::name(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <Self as Choice>::parse(s)
            }
        }
    };
}

choices! {
    /// What a run trains.
    MethodKind ("method") {
        /// The sparse adapter with its rows in host memory.
        Meft = "meft",
        /// A dense adapter of the same shape on the device.
        Parallel = "parallel",
        Lora = "lora",
        /// Every base weight.
        Full = "full",
        /// Nothing: the frozen base.
        None = "none",
    }

    /// How MEFT finds each token's neurons.
    Routing ("routing") {
        /// Score only the keys of the top-P experts by router logit, gated.
        KeyExperts = "key_experts",
        /// Score all M keys (the paper's "w/o Key-Experts" ablation).
        Full = "full",
    }

    /// Which host rows AdamW updates each step.
    HostOptimizer ("host optimizer") {
        /// Only rows touched since the last step, with per-row step counts.
        Lazy = "lazy",
        /// Every row every step (the paper's runs).
        Dense = "dense",
    }

    /// Which step count corrects a host row's AdamW moments for their
    /// zero start.
    BiasCorrection ("bias correction") {
        /// The row's own count of updates (a row first touched late is
        /// corrected as at its first step).
        Row = "row",
        /// The run's optimizer step, one count for every row (PyTorch's
        /// SparseAdam, the paper's DeepSpeedCPUAdam).
        Global = "global",
    }

    /// The dtype of the host AdamW moments.
    MomentDtype ("moment dtype") {
        /// Exact.
        F32 = "f32",
        /// Half the bytes.
        Bf16 = "bf16",
        /// 8-bit block-wise quantised: about a quarter of the bytes.
        Q8 = "q8",
    }

    /// The learning-rate schedule after linear warm-up.
    Schedule ("schedule") {
        /// Decay linearly to 0.
        Linear = "linear",
        ConstantWithWarmup = "constant_with_warmup",
    }

    /// Which kernel computes MEFT's device half.
    MeftKernel ("kernel") {
        /// The fused CPU kernel on the CPU, the composed one elsewhere.
        Auto = "auto",
        /// One CPU op with a hand-written backward (the CPU only).
        Fused = "fused",
        /// Stock tensor ops, as every device runs them (the GPU path).
        Composed = "composed",
    }

    /// How evaluation decodes.
    Decoding ("decoding") { Greedy = "greedy", Beam = "beam" }

    /// The frozen base's dtype (adapters and optimizer state are f32).
    BaseDtype ("dtype") { F32 = "f32", Bf16 = "bf16", F16 = "f16" }

    /// A projection of a decoder layer (where LoRA attaches).
    Proj ("projection") {
        QProj = "q_proj", KProj = "k_proj", VProj = "v_proj", OProj = "o_proj",
        GateProj = "gate_proj", UpProj = "up_proj", DownProj = "down_proj",
    }

    /// What a data file holds: the paper's five benchmark formats, then
    /// the general ones people bring (instruction records, conversations,
    /// raw text), named as on the command line and in presets.
    Task ("task") {
        Nq = "nq", Squad = "squad", Gsm8k = "gsm8k", MetaMath = "metamath",
        ToolBench = "toolbench",
        /// instruction / input / output records (optional system, history).
        Alpaca = "alpaca",
        /// `conversations` of `from` / `value` turns.
        ShareGpt = "sharegpt",
        /// OpenAI-style `messages` of `role` / `content` turns.
        Messages = "messages",
        /// Raw text for continued pretraining, packed into cut-off blocks.
        Text = "text",
    }

    /// Which wording wraps an instruction. `Alpaca` is the paper's; `Plain`
    /// (`Q: … / A: …`) suits small models that cannot afford a long preamble;
    /// `Model` is the checkpoint's own chat template, and the rest are the
    /// built-in chat templates of their families (the record one user turn,
    /// its answer the assistant's).
    Template ("template") {
        Alpaca = "alpaca", Plain = "plain", Model = "model", Chatml = "chatml",
        Llama3 = "llama3", Gemma = "gemma", Mistral = "mistral",
    }

    /// A log a run writes beside `events.jsonl`.
    LogFormat ("log format") {
        /// TensorBoard event files under RUN_DIR/tb/.
        Tensorboard = "tensorboard",
        /// RUN_DIR/metrics.csv, a row per step.
        Csv = "csv",
    }

    /// What `meft export` writes.
    ExportFormat ("export format") {
        /// LoRA as PEFT's adapter_model.safetensors and adapter_config.json.
        Peft = "peft",
        /// The base with the trained weights folded in, as a Hugging Face
        /// directory.
        Merged = "merged",
        /// MEFT's or the Parallel Adapter's weights alone, with their shape.
        Meft = "meft",
        /// The merged model as one GGUF file (f16 or q8_0) with its
        /// tokenizer and chat template.
        Gguf = "gguf",
        /// The base the run trained on, as a Hugging Face directory (what
        /// a PEFT adapter loads onto).
        Base = "base",
    }

    /// The matrices' dtype in a GGUF export.
    GgufDtype ("GGUF dtype") {
        F16 = "f16", Q8_0 = "q8_0",
    }

    /// The metrics by name (DATA.md): the standard ones and the paper's.
    Metric ("metric") {
        SquadEm = "squad_em", SquadF1 = "squad_f1", NqEm = "nq_em",
        Gsm8kAcc = "gsm8k_acc", ContainsCs = "contains_cs", ContainsCi = "contains_ci",
        MetamathAcc = "metamath_acc", ToolIou = "tool_iou",
        /// Open-ended answers: bag-of-words F1, longest-common-subsequence
        /// F-measure, and 4-gram BLEU with NIST smoothing.
        TokenF1 = "token_f1", RougeL = "rouge_l", Bleu4 = "bleu_4",
    }
}

impl BaseDtype {
    pub fn bytes(self) -> u64 {
        match self {
            BaseDtype::F32 => 4,
            BaseDtype::Bf16 | BaseDtype::F16 => 2,
        }
    }

    pub fn dtype(self) -> candle_core::DType {
        match self {
            BaseDtype::F32 => candle_core::DType::F32,
            BaseDtype::Bf16 => candle_core::DType::BF16,
            BaseDtype::F16 => candle_core::DType::F16,
        }
    }
}

impl BiasCorrection {
    pub fn is_row(&self) -> bool {
        *self == BiasCorrection::Row
    }
}

impl MeftKernel {
    pub fn is_auto(&self) -> bool {
        *self == MeftKernel::Auto
    }
}

impl Task {
    /// The metrics a task is scored with (the standard ones, then the
    /// paper's).
    pub fn metrics(self) -> Vec<Metric> {
        match self {
            Task::Nq => vec![Metric::NqEm, Metric::ContainsCs],
            Task::Squad => vec![Metric::SquadEm, Metric::SquadF1, Metric::ContainsCi],
            Task::Gsm8k | Task::MetaMath => vec![Metric::Gsm8kAcc, Metric::MetamathAcc],
            Task::ToolBench => vec![Metric::ToolIou],
            Task::Alpaca | Task::ShareGpt | Task::Messages => {
                vec![Metric::TokenF1, Metric::RougeL, Metric::Bleu4]
            }
            // Raw text is scored by its held-out loss, not by answers.
            Task::Text => vec![],
        }
    }

    /// A conversation or instruction format (its records may carry a
    /// system message and earlier turns), as opposed to a benchmark's.
    pub fn is_general(self) -> bool {
        matches!(
            self,
            Task::Alpaca | Task::ShareGpt | Task::Messages | Task::Text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_spell_and_parse_both_ways() {
        assert_eq!(MethodKind::ALL.len(), 5);
        for k in MethodKind::ALL {
            assert_eq!(k.name().parse::<MethodKind>(), Ok(*k));
        }
        assert_eq!(
            "adapter".parse::<MethodKind>(),
            Err(
                "unknown method \"adapter\", expected one of: meft, parallel, lora, full, none"
                    .into()
            )
        );
        assert_eq!(Routing::KeyExperts.to_string(), "key_experts");
        let t: toml::Table = toml::from_str("r = \"constant_with_warmup\"").unwrap_or_default();
        let s: Schedule = t["r"].clone().try_into().unwrap_or(Schedule::Linear);
        assert_eq!(s, Schedule::ConstantWithWarmup);
        assert_eq!(BaseDtype::Bf16.bytes(), 2);
    }
}
