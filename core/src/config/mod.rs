//! The experiment schema (TOML): defaults, validation with the field's path in
//! every error, `--set a.b=value` overrides, preset load and save.

mod choices;

pub use choices::{
    BaseDtype, BiasCorrection, Choice, Decoding, ExportFormat, GgufDtype, HostOptimizer, LogFormat,
    MeftKernel, MethodKind, Metric, MomentDtype, Proj, Routing, Schedule, Task, Template,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{field}: {msg}")]
    Field { field: String, msg: String },
    #[error("{0}")]
    Io(String),
}

fn field(path: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: path.to_string(),
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Short name of the run (the run directory starts with it).
    pub name: String,
    pub model: ModelSection,
    pub data: DataSection,
    pub method: MethodSection,
    pub train: TrainSection,
    pub eval: EvalSection,
    /// The paper's reported figure for this setting, for "ours vs paper".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paper: Option<PaperFigure>,
}

impl Default for Experiment {
    fn default() -> Self {
        Self {
            name: "run".into(),
            model: ModelSection::default(),
            data: DataSection::default(),
            method: MethodSection::default(),
            train: TrainSection::default(),
            eval: EvalSection::default(),
            paper: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// embedded:tiny, embedded:tiny-random, hf:DIR, gguf:FILE or a path.
    pub reference: String,
    /// cpu or cuda:N.
    pub device: String,
    /// The base weights' dtype (adapters and optimizer state are always
    /// f32).
    pub dtype: BaseDtype,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            reference: "embedded:tiny".into(),
            device: "cpu".into(),
            dtype: BaseDtype::F32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub task: Task,
    /// A file in the task's format, or `synth:entities=N,seed=S`.
    pub train: String,
    /// A file, a `synth:` spec, or empty for the synthetic test split.
    pub eval: String,
    pub template: Template,
    /// Rows scored for validation loss during training (every
    /// `train.eval_every` steps): a file in the task's format, `split:F`
    /// for a seeded share F of the training file, held out of training, or
    /// `test:F` for a share F of the test split (the same rows for every
    /// `train.seed`), held out of the test. Empty: none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub validation: String,
    /// Where each field of the format sits in the user's records, when
    /// their columns are named otherwise (as LLaMA-Factory's dataset_info).
    #[serde(skip_serializing_if = "Columns::is_empty")]
    pub columns: Columns,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            task: Task::Nq,
            train: "synth:entities=200,seed=7".into(),
            eval: String::new(),
            template: Template::Plain,
            validation: String::new(),
            columns: Columns::default(),
        }
    }
}

/// The user's column names for the fields of the general formats; each one
/// left out keeps the format's own name (given after it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Columns {
    /// alpaca `instruction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// alpaca `input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// alpaca `output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// alpaca and sharegpt `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// alpaca `history`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// sharegpt `conversations`, messages `messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
    /// text `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A turn's speaker key: sharegpt `from`, messages `role`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_tag: Option<String>,
    /// A turn's text key: sharegpt `value`, messages `content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_tag: Option<String>,
    /// The user's speaker name: sharegpt `human`, messages `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_tag: Option<String>,
    /// The assistant's speaker name: sharegpt `gpt`, messages `assistant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assistant_tag: Option<String>,
    /// The system's speaker name: `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_tag: Option<String>,
}

impl Columns {
    pub fn is_empty(&self) -> bool {
        *self == Columns::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodSection {
    pub kind: MethodKind,
    pub meft: MeftSection,
    pub parallel: ParallelSection,
    pub lora: LoraSection,
}

impl Default for MethodSection {
    fn default() -> Self {
        Self {
            kind: MethodKind::Meft,
            meft: MeftSection::default(),
            parallel: ParallelSection::default(),
            lora: LoraSection::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeftSection {
    /// M, adapter neurons per layer.
    pub neurons: usize,
    /// K, neurons kept per token.
    pub top_k: usize,
    /// E, experts per layer; 0 means round(√M / expert_factor).
    pub experts: usize,
    pub expert_factor: f64,
    /// P, experts probed per token.
    pub probe: usize,
    pub routing: Routing,
    pub host_optimizer: HostOptimizer,
    /// The step count AdamW's bias correction uses for a host row: its own
    /// (`row`) or the run's (`global`). Left out of the written config at
    /// `row`.
    #[serde(skip_serializing_if = "BiasCorrection::is_row")]
    pub bias_correction: BiasCorrection,
    /// dtype of the host AdamW moments.
    pub moments: MomentDtype,
    /// "all" or a list of layer indices.
    pub layers: Layers,
    /// Rows per adapter layer kept on the device across a step's
    /// micro-batches (at most M; 0 = off): a cached row crosses once per
    /// step and its gradient comes back once.
    pub row_cache: usize,
    /// The paper's pre-retrieval: each layer's rows are selected from the
    /// FFN input `p` layers earlier, on a host worker while the device
    /// computes (0 = off; changes which rows are kept). Left out of the
    /// written config when off.
    #[serde(skip_serializing_if = "is_zero")]
    pub pre_retrieval: usize,
    /// The host optimizer steps on a worker behind the next forward pass;
    /// each layer waits for its own update (the same results bit for bit).
    /// Left out of the written config when off.
    #[serde(skip_serializing_if = "is_false")]
    pub async_host_optim: bool,
    /// The dtype gathered rows cross and live in on the device, and the
    /// adapter's device compute runs in (the host store, its optimizer and
    /// moments stay f32). None: the base's dtype when it is a half type,
    /// else f32. Left out of the written config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_dtype: Option<BaseDtype>,
    /// Which kernel computes the device half: `auto` (the fused one on the
    /// CPU, composed elsewhere), `fused` (CPU only) or `composed` (the GPU
    /// path, also runnable on the CPU). Left out of the written config
    /// when auto.
    #[serde(skip_serializing_if = "MeftKernel::is_auto")]
    pub kernel: MeftKernel,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl Default for MeftSection {
    fn default() -> Self {
        Self {
            neurons: 4096,
            top_k: 32,
            experts: 0,
            expert_factor: 0.25,
            probe: 8,
            routing: Routing::KeyExperts,
            host_optimizer: HostOptimizer::Lazy,
            bias_correction: BiasCorrection::Row,
            moments: MomentDtype::F32,
            layers: Layers::All,
            row_cache: 0,
            pre_retrieval: 0,
            async_host_optim: false,
            row_dtype: None,
            kernel: MeftKernel::Auto,
        }
    }
}

impl MeftSection {
    /// The rows' dtype on the device for a base of `base`: as set, else
    /// the base's when it is a half type, else f32.
    pub fn resolved_row_dtype(&self, base: BaseDtype) -> BaseDtype {
        self.row_dtype.unwrap_or(match base {
            BaseDtype::F32 => BaseDtype::F32,
            half => half,
        })
    }

    /// Whether the composed kernel computes the device half on `device`
    /// (`cpu` or `cuda:N`).
    pub fn composed_on(&self, device: &str) -> bool {
        match self.kernel {
            MeftKernel::Auto => device != "cpu",
            MeftKernel::Fused => false,
            MeftKernel::Composed => true,
        }
    }

    /// The adapter layers on a model of `num_layers`, with the knobs that
    /// depend on its depth checked.
    pub fn resolve_layers(&self, num_layers: usize) -> Result<Vec<usize>, ConfigError> {
        if self.pre_retrieval >= num_layers.max(1) {
            return Err(field(
                "method.meft.pre_retrieval",
                format!(
                    "must be below the model's {num_layers} layers (0 = off), got {}",
                    self.pre_retrieval
                ),
            ));
        }
        self.layers.resolve(num_layers)
    }

    /// E as configured or derived from M: the divisor of M nearest to
    /// round(√M / expert_factor), so that ordinary sizes (powers of two)
    /// just work. When no divisor lies within half of it either way (M
    /// prime, say) the rule's own value is returned, which validation then
    /// refuses with a nearby valid M.
    pub fn resolved_experts(&self) -> usize {
        if self.experts > 0 {
            return self.experts;
        }
        let target = ((self.neurons as f64).sqrt() / self.expert_factor)
            .round()
            .max(1.0) as usize;
        let m = self.neurons;
        if m == 0 || m.is_multiple_of(target) {
            return target;
        }
        (1..=target)
            .flat_map(|step| [target.checked_sub(step), target.checked_add(step)])
            .flatten()
            .take_while(|&e| e >= target / 2 && e <= 2 * target)
            .find(|&e| e > 0 && m.is_multiple_of(e))
            .unwrap_or(target)
    }
}

/// Which layers an adapter goes into: `"all"`, or a list of distinct layer
/// indices (checked as the file is read; their range once the model is
/// known).
#[derive(Debug, Clone, PartialEq)]
pub enum Layers {
    All,
    List(Vec<usize>),
}

impl Serialize for Layers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Layers::All => s.serialize_str("all"),
            Layers::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Layers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<usize>),
        }
        let bad = |msg: String| serde::de::Error::custom(format!("method.meft.layers: {msg}"));
        match Raw::deserialize(d)? {
            Raw::Text(t) if t == "all" => Ok(Layers::All),
            Raw::Text(t) => Err(bad(format!(
                "expected \"all\" or a list of layer indices, got {t:?}"
            ))),
            Raw::List(v) if v.is_empty() => Err(bad("name at least one layer (or \"all\")".into())),
            Raw::List(v) => match v.iter().enumerate().find(|(i, l)| v[..*i].contains(l)) {
                Some((_, twice)) => Err(bad(format!("layer {twice} is listed twice"))),
                None => Ok(Layers::List(v)),
            },
        }
    }
}

impl Layers {
    pub fn resolve(&self, num_layers: usize) -> Result<Vec<usize>, ConfigError> {
        match self {
            Layers::All => Ok((0..num_layers).collect()),
            Layers::List(v) => match v.iter().find(|&&l| l >= num_layers) {
                Some(bad) => Err(field(
                    "method.meft.layers",
                    format!("layer {bad} does not exist (the model has {num_layers})"),
                )),
                None => Ok(v.clone()),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelSection {
    pub size: usize,
}

impl Default for ParallelSection {
    fn default() -> Self {
        Self { size: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// The projections LoRA attaches to: a list, or `"all-linear"` for all
    /// seven (q, k, v, o, gate, up, down), as PEFT spells it.
    #[serde(with = "lora_targets")]
    pub targets: Vec<Proj>,
}

/// `method.lora.targets`: a list of projections, or `"all-linear"`; written
/// back as `"all-linear"` when it names every projection.
mod lora_targets {
    use super::{Choice, Proj};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub const ALL_LINEAR: &str = "all-linear";

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Targets {
        Named(String),
        List(Vec<String>),
    }

    pub fn serialize<S: Serializer>(targets: &[Proj], s: S) -> Result<S::Ok, S::Error> {
        let all = Proj::ALL.iter().all(|p| targets.contains(p)) && targets.len() == Proj::ALL.len();
        if all {
            ALL_LINEAR.serialize(s)
        } else {
            targets.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Proj>, D::Error> {
        match Targets::deserialize(d).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected \"{ALL_LINEAR}\" or a list of projections ({})",
                Proj::names().join(", ")
            ))
        })? {
            Targets::List(v) => v
                .iter()
                .map(|p| Proj::parse(p).map_err(serde::de::Error::custom))
                .collect(),
            Targets::Named(n) if n == ALL_LINEAR => Ok(Proj::ALL.to_vec()),
            Targets::Named(n) => Err(serde::de::Error::custom(format!(
                "unknown targets {n:?}, expected \"{ALL_LINEAR}\" or a list of projections"
            ))),
        }
    }
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: vec![Proj::QProj, Proj::VProj],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup_ratio: f64,
    /// Examples per optimizer step.
    pub batch: usize,
    /// Examples per forward pass; batch / micro_batch accumulation steps.
    pub micro_batch: usize,
    /// Either epochs or steps (steps wins when both are set).
    pub epochs: f64,
    pub steps: usize,
    pub cutoff_len: usize,
    pub seed: u64,
    pub clip: f64,
    /// AdamW's decoupled weight decay, for every optimizer of the run (the
    /// device's and the host rows'; the lazy host optimizer decays the rows
    /// it steps). Left out of the written config when 0.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub weight_decay: f64,
    pub checkpoint_every: usize,
    /// How many checkpoints a run keeps (the newest); 0 keeps every one.
    pub keep_checkpoints: usize,
    /// Whether the prompt's tokens are targets too. Unset: yes for the
    /// fixed-wording templates (the paper's setting), no for a chat
    /// template (the loss on the assistant turns only) — see
    /// [`Experiment::train_on_inputs`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_on_inputs: Option<bool>,
    /// Every this many steps the validation rows (`data.validation`) are
    /// scored: their loss, and with `eval.limit` the task's metrics. 0:
    /// never.
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_every: usize,
    /// Logs written beside `events.jsonl` as the run goes: TensorBoard
    /// event files (`RUN_DIR/tb/`) and `RUN_DIR/metrics.csv`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogFormat>,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            schedule: Schedule::Linear,
            warmup_ratio: 0.02,
            batch: 8,
            micro_batch: 8,
            epochs: 0.0,
            steps: 200,
            cutoff_len: 64,
            seed: 42,
            clip: 1.0,
            weight_decay: 0.0,
            checkpoint_every: 100,
            keep_checkpoints: 3,
            train_on_inputs: None,
            eval_every: 0,
            log: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    pub decoding: Decoding,
    pub beams: usize,
    pub repetition_penalty: f64,
    pub max_new_tokens: usize,
    /// How many test rows to score (0 = all).
    pub limit: usize,
    /// The metrics to report; empty means every metric of the task.
    pub metrics: Vec<Metric>,
    /// Score the test split when training ends. `false` for runs that
    /// choose settings on the validation rows and must not see the test
    /// (a study's learning-rate search). Left out of the written config
    /// when true.
    #[serde(skip_serializing_if = "is_true")]
    pub test: bool,
}

fn is_true(v: &bool) -> bool {
    *v
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            decoding: Decoding::Greedy,
            beams: 4,
            repetition_penalty: 1.0,
            max_new_tokens: 16,
            limit: 100,
            metrics: Vec::new(),
            test: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperFigure {
    pub metric: String,
    pub value: f64,
    pub setting: String,
}

impl Experiment {
    /// Optimizer steps of a run over `n_train` records: `train.steps`, or
    /// enough for `train.epochs` when that is 0.
    pub fn total_steps(&self, n_train: usize) -> u64 {
        if self.train.steps > 0 {
            self.train.steps as u64
        } else {
            ((self.train.epochs * n_train as f64) / self.train.batch as f64)
                .ceil()
                .max(1.0) as u64
        }
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: origin.to_string(),
            msg: one_line(&e.to_string()),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Io(e.to_string()))
    }

    /// Write atomically (temporary name, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_toml()?;
        crate::fsx::write_atomic(path, text.as_bytes())
            .map_err(|e| ConfigError::Io(format!("{}: {e}", path.display())))
    }

    /// Apply `a.b=value` overrides, each as [`Experiment::set`] takes it.
    pub fn apply_sets(&self, sets: &[String]) -> Result<Self, ConfigError> {
        let mut out = self.clone();
        for s in sets {
            let Some((key, raw)) = s.split_once('=') else {
                return Err(field(s, "expected key=value"));
            };
            out.set(key.trim(), raw.trim())?;
        }
        Ok(out)
    }

    /// Set the field at `path` (`method.meft.top_k`, `train.lr`, …) from
    /// `text` the way `--set` and the setup screen both take it: as TOML
    /// (`64`, `3e-4`, `"beam"`, `[0, 3]`), or as plain text where the field
    /// takes text. An error names the path and what the field expects; the
    /// experiment is unchanged then.
    pub fn set(&mut self, path: &str, text: &str) -> Result<(), ConfigError> {
        let parsed = parse_value(text);
        let plain = toml::Value::String(text.to_string());
        let mut err = None;
        for value in [parsed, plain] {
            match self.with_value(path, value) {
                Ok(e) => {
                    *self = e;
                    return Ok(());
                }
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        Err(err.unwrap_or_else(|| field(path, "no such field")))
    }

    /// The experiment with `value` at `path`.
    fn with_value(&self, path: &str, value: toml::Value) -> Result<Self, ConfigError> {
        let mut doc = toml::Value::try_from(self).map_err(|e| ConfigError::Io(e.to_string()))?;
        let parts: Vec<&str> = path.split('.').collect();
        let mut node = &mut doc;
        // A section left out of the text while empty (data.columns) is made
        // on the way down; an unknown one is refused as the value goes in.
        let mut made = false;
        for (i, p) in parts.iter().enumerate() {
            let Some(table) = node.as_table_mut() else {
                return Err(field(path, "not a table"));
            };
            if i + 1 == parts.len() {
                // A knob left out of the text while off is still a field:
                // the sections refuse unknown ones as the value goes in.
                let absent = (made || !table.contains_key(*p)) && path != "paper";
                let shown = match &value {
                    toml::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                table.insert((*p).to_string(), value);
                // The value's type is checked here, so the error names the
                // key rather than a line of a document the user never saw.
                return doc.try_into::<Experiment>().map_err(|e| {
                    let msg = one_line(e.message());
                    if absent && msg.contains("unknown field") {
                        return field(path, "no such field");
                    }
                    // A field's own check already names it and says what it wants.
                    match msg.strip_prefix(&format!("{path}: ")) {
                        Some(own) => field(path, own),
                        None => field(path, expected(&shown, &msg)),
                    }
                });
            }
            if i > 0 && !table.contains_key(*p) {
                made = true;
                table.insert((*p).to_string(), toml::Value::Table(Default::default()));
            }
            node = table
                .get_mut(*p)
                .ok_or_else(|| field(path, "no such field"))?;
        }
        Err(field(path, "no such field"))
    }

    /// The field at `path` as text, the way [`Experiment::set`] reads it
    /// back (strings without quotes); None when there is no such field.
    pub fn get(&self, path: &str) -> Option<String> {
        let doc = toml::Value::try_from(self).ok()?;
        let mut node = &doc;
        for p in path.split('.') {
            node = node.as_table()?.get(p)?;
        }
        Some(match node {
            toml::Value::String(s) => s.clone(),
            v => v.to_string(),
        })
    }

    /// Whether the prompt's tokens are trained on: `train.train_on_inputs`
    /// when set, else only for the fixed-wording templates.
    pub fn train_on_inputs(&self) -> bool {
        self.train
            .train_on_inputs
            .unwrap_or(!self.data.template.is_chat())
    }

    /// Check every knob that does not need the model; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let task_metrics = self.data.task.metrics();
        if let Some(m) = self.eval.metrics.iter().find(|m| !task_metrics.contains(m)) {
            let names: Vec<&str> = task_metrics.iter().map(|m| m.name()).collect();
            return Err(field(
                "eval.metrics",
                format!(
                    "\"{m}\" is not one of {} (the metrics of {})",
                    names.join(", "),
                    self.data.task
                ),
            ));
        }
        if self.method.kind == MethodKind::Full && self.model.dtype != BaseDtype::F32 {
            return Err(field(
                "model.dtype",
                format!(
                    "full fine-tuning trains the base weights in f32; set model.dtype = \"f32\" (got \"{}\")",
                    self.model.dtype
                ),
            ));
        }
        let t = &self.train;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(field(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            ));
        }
        if !(0.0..=1.0).contains(&t.warmup_ratio) {
            return Err(field(
                "train.warmup_ratio",
                format!("must be in [0, 1], got {}", t.warmup_ratio),
            ));
        }
        if t.batch == 0 {
            return Err(field("train.batch", "must be at least 1"));
        }
        if t.micro_batch == 0 || !t.batch.is_multiple_of(t.micro_batch) {
            return Err(field(
                "train.micro_batch",
                format!(
                    "must divide train.batch ({}), got {}",
                    t.batch, t.micro_batch
                ),
            ));
        }
        if t.steps == 0 && t.epochs <= 0.0 {
            return Err(field(
                "train.steps",
                "set train.steps or train.epochs to a positive value",
            ));
        }
        if t.cutoff_len < 4 {
            return Err(field(
                "train.cutoff_len",
                format!("must be at least 4, got {}", t.cutoff_len),
            ));
        }
        if t.clip.is_nan() || t.clip < 0.0 {
            return Err(field("train.clip", "must be ≥ 0 (0 disables clipping)"));
        }
        if !t.weight_decay.is_finite() || !(0.0..1.0).contains(&t.weight_decay) {
            return Err(field(
                "train.weight_decay",
                format!("must be in [0, 1), got {}", t.weight_decay),
            ));
        }
        for prefix in ["split:", "test:"] {
            let Some(share) = self.data.validation.strip_prefix(prefix) else {
                continue;
            };
            match share.trim().parse::<f64>() {
                Ok(f) if f > 0.0 && f < 1.0 => {}
                _ => {
                    return Err(field(
                        "data.validation",
                        format!(
                            "{prefix}F needs a share F strictly between 0 and 1, got {share:?}"
                        ),
                    ))
                }
            }
        }
        if !self.data.columns.is_empty() && !self.data.task.is_general() {
            return Err(field(
                "data.columns",
                format!(
                    "column names map the general formats (alpaca, sharegpt, messages, text); data.task \"{}\" reads its own format",
                    self.data.task
                ),
            ));
        }
        if t.eval_every > 0 && self.data.validation.is_empty() {
            return Err(field(
                "train.eval_every",
                "needs validation rows: set data.validation to a file, to split:F (say split:0.05) or to test:F",
            ));
        }
        if self.eval.beams == 0 {
            return Err(field("eval.beams", "must be at least 1"));
        }
        if self.eval.repetition_penalty.is_nan() || self.eval.repetition_penalty <= 0.0 {
            return Err(field("eval.repetition_penalty", "must be positive"));
        }
        // Every section is checked, used or not: a preset with a broken
        // section is broken, whichever method it runs today.
        if self.method.kind == MethodKind::Meft {
            self.validate_meft()?;
        }
        if self.method.parallel.size == 0 {
            return Err(field("method.parallel.size", "must be at least 1"));
        }
        let l = &self.method.lora;
        if l.rank == 0 {
            return Err(field("method.lora.rank", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&l.dropout) {
            return Err(field(
                "method.lora.dropout",
                format!("must be in [0, 1), got {}", l.dropout),
            ));
        }
        if l.targets.is_empty() {
            return Err(field("method.lora.targets", "name at least one projection"));
        }
        Ok(())
    }

    fn validate_meft(&self) -> Result<(), ConfigError> {
        let m = &self.method.meft;
        if m.neurons == 0 {
            return Err(field("method.meft.neurons", "must be at least 1"));
        }
        if m.top_k == 0 || m.top_k > m.neurons {
            return Err(field(
                "method.meft.top_k",
                format!(
                    "must be in 1..={} (method.meft.neurons), got {}",
                    m.neurons, m.top_k
                ),
            ));
        }
        if m.expert_factor.is_nan() || m.expert_factor <= 0.0 {
            return Err(field("method.meft.expert_factor", "must be positive"));
        }
        let e = m.resolved_experts();
        if e == 0 || !m.neurons.is_multiple_of(e) {
            let path = if m.experts > 0 {
                "method.meft.experts"
            } else {
                "method.meft.neurons"
            };
            let fix = match m.experts {
                // An explicit E: the divisor of M nearest it, or an M it divides.
                0 => format!("nearest valid neurons: {}", nearest_divisible(m.neurons, e)),
                _ => format!(
                    "nearest valid experts: {}, or neurons: {}",
                    nearest_divisor(m.neurons, e),
                    nearest_divisible(m.neurons, e)
                ),
            };
            return Err(field(
                path,
                format!("{e} experts do not divide {} neurons; {fix}", m.neurons),
            ));
        }
        if m.kernel == MeftKernel::Fused && self.model.device != "cpu" {
            return Err(field(
                "method.meft.kernel",
                format!(
                    "the fused kernel runs on the CPU only, not on {}; use \"auto\" or \"composed\"",
                    self.model.device
                ),
            ));
        }
        if m.probe == 0 || m.probe > e {
            return Err(field(
                "method.meft.probe",
                format!("must be in 1..={e} (the experts), got {}", m.probe),
            ));
        }
        Ok(())
    }
}

/// The divisor of `n` nearest `e` (the smaller on a tie).
fn nearest_divisor(n: usize, e: usize) -> usize {
    (1..=n)
        .filter(|d| n.is_multiple_of(*d))
        .min_by_key(|&d| (d.abs_diff(e), d))
        .unwrap_or(1)
}

/// The multiple of `e` nearest `n`.
fn nearest_divisible(n: usize, e: usize) -> usize {
    if e == 0 {
        return n;
    }
    let down = n / e * e;
    let up = down + e;
    if down > 0 && n - down <= up - n {
        down
    } else {
        up
    }
}

/// What a field expected, in words a person reads: serde's "invalid type:
/// string \"x\", expected usize" becomes `expected a whole number, got "x"`.
fn expected(shown: &str, msg: &str) -> String {
    let want = if msg.contains("expected usize")
        || msg.contains("expected u64")
        || msg.contains("expected u32")
    {
        "a whole number".to_string()
    } else if msg.contains("expected f64") {
        "a number".to_string()
    } else if msg.contains("expected a boolean") {
        "true or false".to_string()
    } else if let Some((_, rest)) = msg.split_once("expected one of ") {
        format!("one of {}", rest.replace('`', ""))
    } else if let Some((_, rest)) = msg.split_once("expected ") {
        rest.to_string()
    } else {
        return format!("cannot take {shown}: {msg}");
    };
    format!("expected {want}, got {shown:?}")
}

fn parse_value(raw: &str) -> toml::Value {
    let wrapped = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '|' || c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_experts_divide_every_power_of_two_and_the_papers_m() {
        let experts = |neurons| {
            MeftSection {
                neurons,
                ..Default::default()
            }
            .resolved_experts()
        };
        for m in (10..=20).map(|p| 1usize << p) {
            let e = experts(m);
            assert_eq!(m % e, 0, "M {m}: E {e}");
        }
        assert_eq!(experts(1 << 10), 128);
        assert_eq!(experts(1 << 20), 4096);
        assert_eq!(experts(8464), 368);
        assert_eq!(experts(3600), 240);
    }

    #[test]
    fn an_explicit_e_that_does_not_divide_m_names_a_valid_e_and_m() {
        let mut e = Experiment::default();
        e.method.meft.neurons = 4096;
        e.method.meft.experts = 300;
        let msg = e
            .validate()
            .err()
            .map(|x| x.to_string())
            .unwrap_or_default();
        assert_eq!(
            msg,
            "method.meft.experts: 300 experts do not divide 4096 neurons; nearest valid experts: 256, or neurons: 4200"
        );
    }

    #[test]
    fn lora_targets_take_all_linear_or_a_list_and_name_a_bad_one() {
        let all = Experiment::from_toml("[method.lora]\ntargets = \"all-linear\"\n", "t.toml")
            .map(|e| e.method.lora.targets)
            .unwrap_or_default();
        assert_eq!(all, Proj::ALL.to_vec());
        assert_eq!(all.len(), 7);
        // Written back as it was spelled, so its config hash is stable.
        let mut e = Experiment::default();
        e.method.kind = MethodKind::Lora;
        e.method.lora.targets = all;
        let text = e.to_toml().unwrap_or_default();
        assert!(text.contains("targets = \"all-linear\""), "{text}");
        e.method.lora.targets = vec![Proj::QProj, Proj::VProj];
        let text = e.to_toml().unwrap_or_default();
        assert!(!text.contains("all-linear"), "{text}");
        assert_eq!(
            Experiment::from_toml(&text, "t.toml")
                .map(|e| e.method.lora.targets)
                .ok(),
            Some(vec![Proj::QProj, Proj::VProj])
        );
        for (bad, says) in [
            ("\"all\"", "unknown targets \"all\""),
            ("[\"q_proj\", \"x_proj\"]", "unknown projection \"x_proj\""),
        ] {
            let msg = Experiment::from_toml(&format!("[method.lora]\ntargets = {bad}\n"), "t.toml")
                .err()
                .map(|x| x.to_string())
                .unwrap_or_default();
            assert!(msg.starts_with("t.toml") && msg.contains(says), "{msg}");
        }
    }
}
