//! The synthetic world: seeded fictional people with facts no base model can
//! already know, written out in the real task formats (NQ-open, SQuAD,
//! GSM8K, MetaMathQA, ToolBench) so the real loaders and metrics run end to
//! end. The same spec always writes the same bytes, and worlds with different
//! namespaces never share a name, so facts for pretraining a base model can be
//! kept apart from the facts a preset fine-tunes on.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::formats::gsm8k::{self, Gsm8kRow};
use super::formats::metamath::{self, MetaMathRow};
use super::formats::nq::{self, NqRow};
use super::formats::squad::{self, SquadAnswer, SquadArticle, SquadDoc, SquadParagraph, SquadQa};
use super::formats::toolbench::{self, ToolApi, ToolParam, ToolQuery};
use super::formats::{self, Id};
use super::{DataError, Task};

/// Size knobs of a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldSpec {
    /// People in the world.
    pub entities: usize,
    pub seed: u64,
    /// Distinct values per attribute (towns, employers, …).
    pub pool: usize,
    /// Attributes per person, at most `Attribute::ALL.len()`.
    pub attributes: usize,
    /// Worlds with different namespaces never share a person's name, whatever
    /// their seeds (namespaces below 16 keep two-syllable family names).
    pub namespace: u64,
    /// Adds one unanswerable question per person to SQuAD (written as v2.0).
    pub unanswerable: bool,
}

impl Default for WorldSpec {
    fn default() -> Self {
        WorldSpec {
            entities: 200,
            seed: 0,
            pool: 24,
            attributes: 6,
            namespace: 0,
            unanswerable: false,
        }
    }
}

/// Beyond this the name space of one namespace (tens of millions) is still
/// far away, but generation time and file sizes stop being sensible.
pub const MAX_ENTITIES: usize = 1_000_000;
const MAX_POOL: usize = 5_000;

impl WorldSpec {
    pub fn validate(&self) -> Result<(), DataError> {
        if self.entities == 0 || self.entities > MAX_ENTITIES {
            return Err(DataError::Setting(format!(
                "entities must be between 1 and {MAX_ENTITIES}, got {}",
                self.entities
            )));
        }
        if self.pool < 2 || self.pool > MAX_POOL {
            return Err(DataError::Setting(format!(
                "pool must be between 2 and {MAX_POOL}, got {}",
                self.pool
            )));
        }
        if self.attributes == 0 || self.attributes > Attribute::ALL.len() {
            return Err(DataError::Setting(format!(
                "attributes must be between 1 and {}, got {}",
                Attribute::ALL.len(),
                self.attributes
            )));
        }
        Ok(())
    }
}

/// The kinds of fact a person can have, in the order a spec takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribute {
    Town,
    Employer,
    Instrument,
    Colour,
    Year,
    Dish,
    Ship,
    Street,
}

/// Per attribute: the declarative sentence and four question wordings. The
/// first three train; the fourth is held out for testing, so a test asks a
/// known fact in words never trained on.
struct Wording {
    statement: &'static str,
    questions: [&'static str; 4],
}

impl Attribute {
    pub const ALL: [Attribute; 8] = [
        Attribute::Town,
        Attribute::Employer,
        Attribute::Instrument,
        Attribute::Colour,
        Attribute::Year,
        Attribute::Dish,
        Attribute::Ship,
        Attribute::Street,
    ];

    fn wording(self) -> Wording {
        let (statement, questions) = match self {
            Attribute::Town => (
                "{n} was born in {v}.",
                [
                    "where was {n} born",
                    "in which town was {n} born",
                    "what is the birthplace of {n}",
                    "what town is {n} from",
                ],
            ),
            Attribute::Employer => (
                "{n} works for {v}.",
                [
                    "who does {n} work for",
                    "what company employs {n}",
                    "who is the employer of {n}",
                    "where does {n} work",
                ],
            ),
            Attribute::Instrument => (
                "{n} plays the {v}.",
                [
                    "what instrument does {n} play",
                    "which instrument is played by {n}",
                    "what musical instrument does {n} play",
                    "what does {n} play",
                ],
            ),
            Attribute::Colour => (
                "The favourite colour of {n} is {v}.",
                [
                    "what is the favourite colour of {n}",
                    "which colour does {n} like best",
                    "what colour does {n} prefer",
                    "what colour is the favourite of {n}",
                ],
            ),
            Attribute::Year => (
                "{n} began work in {v}.",
                [
                    "in what year did {n} begin work",
                    "when did {n} begin work",
                    "what year did {n} start working",
                    "in which year did {n} start work",
                ],
            ),
            Attribute::Dish => (
                "{n} likes to cook {v}.",
                [
                    "what does {n} like to cook",
                    "which dish does {n} cook",
                    "what dish does {n} like to make",
                    "what is the favourite dish of {n}",
                ],
            ),
            Attribute::Ship => (
                "{n} sailed on the {v}.",
                [
                    "what ship did {n} sail on",
                    "which ship carried {n}",
                    "on which ship did {n} sail",
                    "what was the name of the ship {n} sailed on",
                ],
            ),
            Attribute::Street => (
                "{n} lives on {v}.",
                [
                    "what street does {n} live on",
                    "on which street does {n} live",
                    "what is the street of {n}",
                    "where does {n} live",
                ],
            ),
        };
        Wording {
            statement,
            questions,
        }
    }

    /// The declarative line of a fact.
    pub fn statement(self, name: &str, value: &str) -> String {
        self.wording()
            .statement
            .replace("{n}", name)
            .replace("{v}", value)
    }

    /// Question wording `i` (0–2 train, 3 test) in NQ-open's style: lower
    /// case start, no question mark.
    pub fn question(self, name: &str, i: usize) -> String {
        let questions = self.wording().questions;
        questions[i.min(questions.len() - 1)].replace("{n}", name)
    }
}

const TRAIN_WORDINGS: usize = 3;
const TEST_WORDING: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    pub attribute: Attribute,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    pub facts: Vec<Fact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    pub entities: Vec<Entity>,
    /// Town names; the API catalogue's queries use them too.
    pub towns: Vec<String>,
}

// ---------------------------------------------------------------- names

const ONSETS: [&str; 14] = [
    "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
];
const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
const SYLLABLES: usize = ONSETS.len() * VOWELS.len();
const FAMILY_CODAS: [&str; 8] = ["k", "n", "r", "sk", "rn", "th", "ll", "x"];
const GIVEN_CODAS: [&str; 6] = ["", "n", "l", "r", "s", "th"];
/// Family words of two syllables and a coda.
const FAMILY_WORDS: u64 = (SYLLABLES * SYLLABLES * FAMILY_CODAS.len()) as u64;
/// Namespaces below this get disjoint shares of the two-syllable family
/// words; larger ones also carry leading syllables spelling `namespace / 16`.
const NAMESPACE_SHARDS: u64 = 16;

fn syllable(i: usize) -> String {
    format!(
        "{}{}",
        ONSETS[(i / VOWELS.len()) % ONSETS.len()],
        VOWELS[i % VOWELS.len()]
    )
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// A family word that only `namespace` can produce. Words are syllables
/// (one consonant, one vowel) then a consonant coda, so a word splits back
/// into its parts in one way only; the two-syllable part's index `w` is a
/// bijective scramble of `(namespace % 16) * 2450 + k`, and any leading
/// syllables spell `namespace / 16` in base 70 without leading zeros. Distinct
/// (namespace, k) therefore always give distinct words.
fn family_word(namespace: u64, k: u64) -> String {
    let shard = namespace % NAMESPACE_SHARDS;
    let per_shard = FAMILY_WORDS / NAMESPACE_SHARDS;
    // Contiguous blocks, not residues: an affine map keeps residues modulo
    // the coda count, which would give a whole namespace one coda.
    let x = shard * per_shard + k % per_shard;
    // 7919 is coprime with 39200, so this permutes 0..39200.
    let w = ((x * 7919 + 12345) % FAMILY_WORDS) as usize;
    let mut prefix = Vec::new();
    let mut q = namespace / NAMESPACE_SHARDS;
    while q > 0 {
        prefix.push(syllable((q % SYLLABLES as u64) as usize));
        q /= SYLLABLES as u64;
    }
    prefix.reverse();
    let codas = FAMILY_CODAS.len();
    let word = format!(
        "{}{}{}{}",
        prefix.concat(),
        syllable(w / (SYLLABLES * codas)),
        syllable((w / codas) % SYLLABLES),
        FAMILY_CODAS[w % codas]
    );
    capitalise(&word)
}

fn person_name(rng: &mut ChaCha8Rng, namespace: u64) -> String {
    let given = format!(
        "{}{}{}",
        syllable(rng.random_range(0..SYLLABLES)),
        syllable(rng.random_range(0..SYLLABLES)),
        GIVEN_CODAS[rng.random_range(0..GIVEN_CODAS.len())]
    );
    let k = rng.random_range(0..FAMILY_WORDS / NAMESPACE_SHARDS);
    format!("{} {}", capitalise(&given), family_word(namespace, k))
}

/// Draws a name not yet in `taken` and records it.
fn fresh_name(rng: &mut ChaCha8Rng, namespace: u64, taken: &mut HashSet<String>) -> String {
    loop {
        let name = person_name(rng, namespace);
        if taken.insert(name.clone()) {
            return name;
        }
    }
}

fn pool_word(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{}",
        syllable(rng.random_range(0..SYLLABLES)),
        syllable(rng.random_range(0..SYLLABLES))
    )
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn pool_value(attribute: Attribute, rng: &mut ChaCha8Rng) -> String {
    let word = pool_word(rng);
    match attribute {
        Attribute::Town => {
            let end = pick(
                rng,
                &[
                    "holm", "ford", "wick", "mouth", "by", "stead", "vale", "port",
                ],
            );
            capitalise(&format!("{word}{end}"))
        }
        Attribute::Employer => {
            let kind = pick(
                rng,
                &[
                    "Works", "Foundry", "Guild", "Mills", "Press", "Company", "Lines", "Yards",
                ],
            );
            format!("{} {kind}", capitalise(&word))
        }
        Attribute::Instrument => {
            let kind = pick(
                rng,
                &[
                    "horn", "lute", "pipe", "drum", "harp", "fiddle", "bell", "flute",
                ],
            );
            format!("{word}{kind}")
        }
        Attribute::Colour => {
            let base = pick(
                rng,
                &[
                    "blue", "green", "red", "grey", "gold", "violet", "amber", "white",
                ],
            );
            format!("{word} {base}")
        }
        Attribute::Year => rng.random_range(1600..2000).to_string(),
        Attribute::Dish => {
            let kind = pick(
                rng,
                &[
                    "stew",
                    "pie",
                    "cake",
                    "broth",
                    "bread",
                    "dumplings",
                    "tart",
                    "soup",
                ],
            );
            format!("{word} {kind}")
        }
        Attribute::Ship => {
            let noun = pick(
                rng,
                &[
                    "Star", "Wave", "Gull", "Crown", "Lark", "Tern", "Comet", "Reed",
                ],
            );
            format!("{} {noun}", capitalise(&word))
        }
        Attribute::Street => {
            let kind = pick(
                rng,
                &[
                    "Lane", "Row", "Street", "Walk", "Hill", "Yard", "Close", "Road",
                ],
            );
            format!("{} {kind}", capitalise(&word))
        }
    }
}

fn pool(attribute: Attribute, size: usize, rng: &mut ChaCha8Rng) -> Vec<String> {
    // Years only span four centuries; the word pools never run out.
    let size = match attribute {
        Attribute::Year => size.min(400),
        _ => size,
    };
    let mut seen = HashSet::new();
    let mut values = Vec::with_capacity(size);
    while values.len() < size {
        let value = pool_value(attribute, rng);
        if seen.insert(value.clone()) {
            values.push(value);
        }
    }
    values
}

/// Mixes the seed, the namespace and a purpose so every stream is
/// independent (splitmix64's finaliser).
fn stream_seed(seed: u64, namespace: u64, purpose: u64) -> u64 {
    let mut z = seed
        ^ namespace.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ purpose.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn task_rng(spec: &WorldSpec, task: Task) -> ChaCha8Rng {
    let purpose = 1 + Task::ALL.iter().position(|&t| t == task).unwrap_or(0) as u64;
    ChaCha8Rng::seed_from_u64(stream_seed(spec.seed, spec.namespace, purpose))
}

/// The world a spec describes. Sizes outside `WorldSpec::validate`'s bounds
/// are clamped into them.
pub fn world(spec: &WorldSpec) -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(spec.seed, spec.namespace, 0));
    let entities = spec.entities.clamp(1, MAX_ENTITIES);
    let pool_size = spec.pool.clamp(2, MAX_POOL);
    let attributes = &Attribute::ALL[..spec.attributes.clamp(1, Attribute::ALL.len())];
    let pools: Vec<Vec<String>> = Attribute::ALL
        .iter()
        .map(|&a| pool(a, pool_size, &mut rng))
        .collect();
    let mut taken = HashSet::new();
    let people = (0..entities)
        .map(|_| {
            let name = fresh_name(&mut rng, spec.namespace, &mut taken);
            let facts = attributes
                .iter()
                .zip(&pools)
                .map(|(&attribute, values)| Fact {
                    attribute,
                    value: values[rng.random_range(0..values.len())].clone(),
                })
                .collect();
            Entity { name, facts }
        })
        .collect();
    World {
        entities: people,
        towns: pools.first().cloned().unwrap_or_default(),
    }
}

/// Every declarative line and every question/answer pair of the world, in
/// every wording: text to fit a tokenizer on or to pretrain a base model with.
pub fn corpus_text(world: &World) -> String {
    let mut out = String::new();
    for entity in &world.entities {
        for fact in &entity.facts {
            out.push_str(&fact.attribute.statement(&entity.name, &fact.value));
            out.push('\n');
            for i in 0..=TEST_WORDING {
                out.push_str("Q: ");
                out.push_str(&fact.attribute.question(&entity.name, i));
                out.push_str("\nA: ");
                out.push_str(&fact.value);
                out.push('\n');
            }
        }
    }
    out
}

// ---------------------------------------------------------------- writing

/// What `write` produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthReport {
    pub task: Task,
    pub train: PathBuf,
    pub test: PathBuf,
    /// Files besides train and test (the NQ knowledge lines).
    pub extra: Vec<PathBuf>,
    pub train_records: usize,
    pub test_records: usize,
}

impl fmt::Display for SynthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} train records in {}, {} test records in {}",
            self.task,
            self.train_records,
            self.train.display(),
            self.test_records,
            self.test.display()
        )?;
        for extra in &self.extra {
            write!(f, ", {}", extra.display())?;
        }
        Ok(())
    }
}

/// File names `write` uses for a task's train and test splits.
pub fn file_names(task: Task) -> (&'static str, &'static str) {
    match task {
        Task::Nq | Task::Gsm8k => ("train.jsonl", "test.jsonl"),
        Task::Squad | Task::MetaMath | Task::ToolBench => ("train.json", "test.json"),
    }
}

/// Writes `train.*` and `test.*` for `task` into `out` (created if needed).
pub fn write(task: Task, spec: &WorldSpec, out: &Path) -> Result<SynthReport, DataError> {
    spec.validate()?;
    fs::create_dir_all(out).map_err(|e| DataError::io(out, e))?;
    let (train_name, test_name) = file_names(task);
    let train = out.join(train_name);
    let test = out.join(test_name);
    let world = world(spec);
    let mut rng = task_rng(spec, task);
    let mut extra = Vec::new();
    let paths = (train.as_path(), test.as_path());
    let (train_records, test_records) = match task {
        Task::Nq => {
            let knowledge = out.join("knowledge.txt");
            formats::write_text(&knowledge, &knowledge_text(&world))?;
            extra.push(knowledge);
            write_splits(nq::write, paths, nq_rows(&world))?
        }
        Task::Squad => {
            let mut taken: HashSet<String> =
                world.entities.iter().map(|e| e.name.clone()).collect();
            let (tr, n_tr) = squad_doc(&world, spec, &mut rng, &mut taken, Split::Train);
            let (te, n_te) = squad_doc(&world, spec, &mut rng, &mut taken, Split::Test);
            squad::write(&train, &tr)?;
            squad::write(&test, &te)?;
            (n_tr, n_te)
        }
        Task::Gsm8k => {
            let (tr, te) = arithmetic_problems(&world, spec, &mut rng);
            let rows = |ps: Vec<Problem>| ps.iter().map(Problem::gsm8k).collect();
            write_splits(gsm8k::write, paths, (rows(tr), rows(te)))?
        }
        Task::MetaMath => {
            let (tr, te) = arithmetic_problems(&world, spec, &mut rng);
            let rows = |ps: Vec<Problem>| ps.iter().map(Problem::metamath).collect();
            write_splits(metamath::write, paths, (rows(tr), rows(te)))?
        }
        Task::ToolBench => {
            let catalogue = catalogue(spec, &mut rng);
            write_splits(
                toolbench::write,
                paths,
                tool_queries(&world, spec, &catalogue, &mut rng),
            )?
        }
    };
    Ok(SynthReport {
        task,
        train,
        test,
        extra,
        train_records,
        test_records,
    })
}

/// Writes both splits with a format's writer; returns their record counts.
fn write_splits<T>(
    write: fn(&Path, &[T]) -> Result<(), DataError>,
    (train, test): (&Path, &Path),
    (train_rows, test_rows): (Vec<T>, Vec<T>),
) -> Result<(usize, usize), DataError> {
    write(train, &train_rows)?;
    write(test, &test_rows)?;
    Ok((train_rows.len(), test_rows.len()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

// ---------------------------------------------------------------- NQ-open

fn nq_rows(world: &World) -> (Vec<NqRow>, Vec<NqRow>) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for entity in &world.entities {
        for fact in &entity.facts {
            let row = |i| {
                NqRow::open(
                    fact.attribute.question(&entity.name, i),
                    vec![fact.value.clone()],
                )
            };
            train.extend((0..TRAIN_WORDINGS).map(row));
            test.push(row(TEST_WORDING));
        }
    }
    (train, test)
}

fn knowledge_text(world: &World) -> String {
    let mut out = String::new();
    for entity in &world.entities {
        for fact in &entity.facts {
            out.push_str(&fact.attribute.statement(&entity.name, &fact.value));
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------- SQuAD

fn squad_question(attribute: Attribute, name: &str, wording: usize) -> String {
    format!("{}?", capitalise(&attribute.question(name, wording)))
}

/// Biography contexts with the facts in a shuffled order, and character
/// offsets recorded as each sentence is placed. Train and test share the
/// contexts and ask in different wordings.
fn squad_doc(
    world: &World,
    spec: &WorldSpec,
    rng: &mut ChaCha8Rng,
    taken: &mut HashSet<String>,
    split: Split,
) -> (SquadDoc, usize) {
    let wording = match split {
        Split::Train => 0,
        Split::Test => TEST_WORDING,
    };
    let mut count = 0;
    let mut data = Vec::with_capacity(world.entities.len());
    for (e, entity) in world.entities.iter().enumerate() {
        let mut order: Vec<usize> = (0..entity.facts.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut context = String::new();
        let mut starts = vec![0; entity.facts.len()];
        for &f in &order {
            let fact = &entity.facts[f];
            if !context.is_empty() {
                context.push(' ');
            }
            let statement = fact.attribute.wording().statement;
            let (before, after) = statement.split_once("{v}").unwrap_or((statement, ""));
            context.push_str(&before.replace("{n}", &entity.name));
            starts[f] = context.chars().count();
            context.push_str(&fact.value);
            context.push_str(&after.replace("{n}", &entity.name));
        }
        let mut qas: Vec<SquadQa> = entity
            .facts
            .iter()
            .zip(&starts)
            .enumerate()
            .map(|(f, (fact, &start))| SquadQa {
                id: Id::Text(format!("synth-squad-{}-{e:06}-{f}", split.name())),
                question: squad_question(fact.attribute, &entity.name, wording),
                answers: vec![SquadAnswer {
                    text: fact.value.clone(),
                    answer_start: start,
                }],
                is_impossible: spec.unanswerable.then_some(false),
            })
            .collect();
        if spec.unanswerable {
            let stranger = fresh_name(rng, spec.namespace, taken);
            let attribute = entity.facts[rng.random_range(0..entity.facts.len())].attribute;
            qas.push(SquadQa {
                id: Id::Text(format!("synth-squad-{}-{e:06}-x", split.name())),
                question: squad_question(attribute, &stranger, wording),
                answers: Vec::new(),
                is_impossible: Some(true),
            });
        }
        count += qas.len();
        data.push(SquadArticle {
            title: entity.name.clone(),
            paragraphs: vec![SquadParagraph { context, qas }],
        });
    }
    let version = if spec.unanswerable { "v2.0" } else { "1.1" }.to_string();
    (SquadDoc { version, data }, count)
}

// ---------------------------------------------------------------- arithmetic

struct Step {
    a: i64,
    op: char,
    b: i64,
    unit: &'static str,
}

impl Step {
    fn value(&self) -> i64 {
        match self.op {
            '+' => self.a + self.b,
            '-' => self.a - self.b,
            '*' => self.a * self.b,
            _ => self.a / self.b.max(1),
        }
    }
}

struct Problem {
    question: String,
    steps: Vec<Step>,
}

impl Problem {
    fn answer(&self) -> i64 {
        self.steps.last().map(Step::value).unwrap_or(0)
    }

    fn lines(&self, annotate: bool) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| {
                let c = s.value();
                let unit = if s.unit.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.unit)
                };
                if annotate {
                    format!(
                        "{} {} {} = <<{}{}{}={c}>>{c}{unit}.",
                        s.a, s.op, s.b, s.a, s.op, s.b
                    )
                } else {
                    format!("{} {} {} = {c}{unit}.", s.a, s.op, s.b)
                }
            })
            .collect()
    }

    fn gsm8k(&self) -> Gsm8kRow {
        Gsm8kRow {
            id: None,
            question: self.question.clone(),
            answer: format!("{}\n#### {}", self.lines(true).join("\n"), self.answer()),
        }
    }

    fn metamath(&self) -> MetaMathRow {
        let n = self.answer();
        MetaMathRow {
            id: None,
            query: self.question.clone(),
            response: format!(
                "{}\n#### {n}\nThe answer is: {n}",
                self.lines(false).join("\n")
            ),
            kind: "GSM_AnsAug".to_string(),
        }
    }
}

fn problem(name: &str, rng: &mut ChaCha8Rng) -> Problem {
    let step = |a, op, b, unit| Step { a, op, b, unit };
    match rng.random_range(0..5) {
        0 => {
            let a = rng.random_range(2..10);
            let b = rng.random_range(6..25);
            let c = rng.random_range(1..a * b);
            let p = a * b;
            Problem {
                question: format!(
                    "{name} bakes {a} trays of {b} rolls and sells {c}. How many rolls are left?"
                ),
                steps: vec![step(a, '*', b, "rolls"), step(p, '-', c, "rolls")],
            }
        }
        1 => {
            let c = rng.random_range(2..8);
            let d = rng.random_range(2..6);
            let b = rng.random_range(5..20);
            let a = (c * d) / b + rng.random_range(1..6);
            let (p, q) = (a * b, c * d);
            Problem {
                question: format!("{name} buys {a} boxes with {b} pencils each and gives {c} pencils to each of {d} friends. How many pencils does {name} have left?"),
                steps: vec![
                    step(a, '*', b, "pencils"),
                    step(c, '*', d, "pencils"),
                    step(p, '-', q, "pencils"),
                ],
            }
        }
        2 => {
            let a = rng.random_range(8..40);
            let b = rng.random_range(2..10);
            let c = rng.random_range(2..7);
            let p = a * b;
            Problem {
                question: format!("{name} earns {a} dollars an hour and works {b} hours a day. How many dollars does {name} earn in {c} days?"),
                steps: vec![step(a, '*', b, "dollars"), step(p, '*', c, "dollars")],
            }
        }
        3 => {
            let c = rng.random_range(2..7);
            let per = rng.random_range(3..15);
            let total = c * per;
            let a = rng.random_range(1..total);
            let b = total - a;
            let d = rng.random_range(1..10);
            Problem {
                question: format!("{name} collects {a} shells on Monday and {b} shells on Tuesday, then shares them equally among {c} jars. Each jar also gets {d} pebbles. How many things are in each jar?"),
                steps: vec![
                    step(a, '+', b, "shells"),
                    step(total, '/', c, "shells"),
                    step(per, '+', d, "things"),
                ],
            }
        }
        _ => {
            let a = rng.random_range(6..30);
            let b = rng.random_range(2..12);
            let c = rng.random_range(1..a * b);
            let p = a * b;
            Problem {
                question: format!("A crate holds {a} jars. {name} fills {b} crates and then breaks {c} jars. How many whole jars are there?"),
                steps: vec![step(a, '*', b, "jars"), step(p, '-', c, "")],
            }
        }
    }
}

fn split_sizes(spec: &WorldSpec) -> (usize, usize) {
    let train = spec.entities.max(1);
    (train, (train / 4).max(1))
}

/// Train and test never share a question.
fn arithmetic_problems(
    world: &World,
    spec: &WorldSpec,
    rng: &mut ChaCha8Rng,
) -> (Vec<Problem>, Vec<Problem>) {
    let (n_train, n_test) = split_sizes(spec);
    let mut seen = HashSet::new();
    let mut all = Vec::with_capacity(n_train + n_test);
    while all.len() < n_train + n_test {
        let entity = &world.entities[rng.random_range(0..world.entities.len())];
        let p = problem(&entity.name, rng);
        if seen.insert(p.question.clone()) {
            all.push(p);
        }
    }
    let test = all.split_off(n_train);
    (all, test)
}

// ---------------------------------------------------------------- ToolBench

/// An API kind of a category: its name, description and how a query asks
/// for it (`{t}` the tool, `{p}` a town).
struct ApiKind {
    name: &'static str,
    description: &'static str,
    ask: &'static str,
}

const CATEGORIES: [(&str, [ApiKind; 3]); 5] = [
    (
        "Weather",
        [
            ApiKind {
                name: "Forecast",
                description: "Daily forecast for a town.",
                ask: "the {t} forecast for {p}",
            },
            ApiKind {
                name: "Alerts",
                description: "Storm alerts for a town.",
                ask: "any {t} storm alerts for {p}",
            },
            ApiKind {
                name: "Rainfall",
                description: "Rainfall of the last seven days.",
                ask: "last week's rainfall in {p} from {t}",
            },
        ],
    ),
    (
        "Travel",
        [
            ApiKind {
                name: "TideTable",
                description: "High and low tides at a harbour.",
                ask: "the tide table at {p} from {t}",
            },
            ApiKind {
                name: "Ferries",
                description: "Ferry departures from a port.",
                ask: "the {t} ferry departures from {p}",
            },
            ApiKind {
                name: "Lodging",
                description: "Rooms free tonight in a town.",
                ask: "free rooms in {p} on {t}",
            },
        ],
    ),
    (
        "Music",
        [
            ApiKind {
                name: "Concerts",
                description: "Concerts coming up in a town.",
                ask: "upcoming concerts in {p} listed by {t}",
            },
            ApiKind {
                name: "Tuning",
                description: "Tuning charts for folk instruments.",
                ask: "a {t} tuning chart for players in {p}",
            },
            ApiKind {
                name: "Charts",
                description: "Most played songs in a region.",
                ask: "the {t} song charts around {p}",
            },
        ],
    ),
    (
        "Finance",
        [
            ApiKind {
                name: "Rates",
                description: "Exchange rates at a town's market.",
                ask: "the {t} exchange rates in {p}",
            },
            ApiKind {
                name: "Prices",
                description: "Market prices for staple goods.",
                ask: "market prices in {p} from {t}",
            },
            ApiKind {
                name: "Loans",
                description: "Loan offers from local lenders.",
                ask: "{t} loan offers near {p}",
            },
        ],
    ),
    (
        "Food",
        [
            ApiKind {
                name: "Recipes",
                description: "Recipes of a region.",
                ask: "{t} recipes from {p}",
            },
            ApiKind {
                name: "Markets",
                description: "Opening days of food markets.",
                ask: "when the {p} market opens according to {t}",
            },
            ApiKind {
                name: "Bakeries",
                description: "Bakeries open early in a town.",
                ask: "early bakeries in {p} on {t}",
            },
        ],
    ),
];

/// An API on offer and how a query asks for it.
struct OfferedApi {
    api: ToolApi,
    ask: &'static str,
}

/// Invented tools, each in one category and offering two or three of its
/// API kinds.
fn catalogue(spec: &WorldSpec, rng: &mut ChaCha8Rng) -> Vec<OfferedApi> {
    let n_tools = spec.pool.clamp(4, 200);
    let mut names = HashSet::new();
    let mut apis = Vec::new();
    while names.len() < n_tools {
        let end = pick(
            rng,
            &["cast", "mark", "loom", "ly", "hub", "wise", "line", "post"],
        );
        let name = capitalise(&format!("{}{end}", pool_word(rng)));
        if !names.insert(name.clone()) {
            continue;
        }
        let (category, kinds) = &CATEGORIES[rng.random_range(0..CATEGORIES.len())];
        let skip = rng.random_range(0..=kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            if i == skip {
                continue;
            }
            let api = ToolApi {
                category_name: category.to_string(),
                tool_name: name.clone(),
                api_name: kind.name.to_string(),
                api_description: kind.description.to_string(),
                required_parameters: vec![ToolParam {
                    name: "town".to_string(),
                    kind: "STRING".to_string(),
                    description: "Name of the town.".to_string(),
                    default: String::new(),
                }],
                optional_parameters: Vec::new(),
                method: "GET".to_string(),
            };
            apis.push(OfferedApi { api, ask: kind.ask });
        }
    }
    apis
}

fn tool_queries(
    world: &World,
    spec: &WorldSpec,
    apis: &[OfferedApi],
    rng: &mut ChaCha8Rng,
) -> (Vec<ToolQuery>, Vec<ToolQuery>) {
    let (n_train, n_test) = split_sizes(spec);
    let mut seen = HashSet::new();
    let mut rows = Vec::with_capacity(n_train + n_test);
    while rows.len() < n_train + n_test {
        let k = rng.random_range(1..=3usize.min(apis.len()));
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        while chosen.len() < k {
            let i = rng.random_range(0..apis.len());
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        let asks: Vec<String> = chosen
            .iter()
            .map(|&i| {
                let town = &world.towns[rng.random_range(0..world.towns.len())];
                apis[i]
                    .ask
                    .replace("{t}", &apis[i].api.tool_name)
                    .replace("{p}", town)
            })
            .collect();
        let wanted = match asks.as_slice() {
            [one] => one.clone(),
            [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
            [] => String::new(),
        };
        let opener = pick(
            rng,
            &[
                "Could you get me",
                "Please find",
                "I need",
                "Can you look up",
            ],
        );
        let query = format!("{opener} {wanted}?");
        if !seen.insert(query.clone()) {
            continue;
        }
        let mut list: Vec<usize> = chosen.clone();
        let distractors = rng.random_range(1..=3usize);
        for _ in 0..distractors {
            let i = rng.random_range(0..apis.len());
            if !list.contains(&i) {
                list.push(i);
            }
        }
        for i in (1..list.len()).rev() {
            list.swap(i, rng.random_range(0..=i));
        }
        let id = rows.len() as u64;
        let query_id = if id < n_train as u64 {
            id
        } else {
            1_000_000 + id
        };
        rows.push(ToolQuery {
            query,
            query_id: Id::Number(query_id.into()),
            api_list: list.iter().map(|&i| apis[i].api.clone()).collect(),
            relevant: chosen
                .iter()
                .map(|&i| vec![apis[i].api.tool_name.clone(), apis[i].api.api_name.clone()])
                .collect(),
        });
    }
    let test = rows.split_off(n_train);
    (rows, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load;

    fn small() -> WorldSpec {
        WorldSpec {
            entities: 30,
            seed: 11,
            pool: 8,
            attributes: 4,
            namespace: 0,
            unanswerable: false,
        }
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn world_is_seeded_and_collision_free() {
        let spec = small();
        let a = world(&spec);
        assert_eq!(a, world(&spec));
        assert_ne!(a, world(&WorldSpec { seed: 12, ..spec }));
        assert_eq!(a.entities.len(), 30);
        assert!(a.entities.iter().all(|e| e.facts.len() == 4));
        let names: HashSet<&str> = a.entities.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), 30);
        for e in &a.entities {
            let words: Vec<&str> = e.name.split(' ').collect();
            assert_eq!(words.len(), 2, "{}", e.name);
            assert!(words
                .iter()
                .all(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase())));
        }
        assert!(corpus_text(&a).is_ascii());
    }

    #[test]
    fn namespaces_never_share_names() {
        let names = |namespace, seed| -> HashSet<String> {
            let spec = WorldSpec {
                entities: 3000,
                seed,
                namespace,
                ..WorldSpec::default()
            };
            world(&spec).entities.into_iter().map(|e| e.name).collect()
        };
        // same seed, so only the namespace keeps them apart
        let preset = names(0, 5);
        for other in [1, 15, 16, 17, 1_000_003] {
            let pretrain = names(other, 5);
            assert_eq!(pretrain.len(), 3000);
            assert!(preset.is_disjoint(&pretrain), "namespace {other}");
        }
        // family words of different namespaces differ for every draw
        let a: HashSet<String> = (0..2450).map(|k| family_word(3, k)).collect();
        let b: HashSet<String> = (0..2450).map(|k| family_word(19, k)).collect();
        assert_eq!(a.len(), 2450);
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn same_seed_writes_identical_files_for_every_task() -> Result<(), DataError> {
        let spec = WorldSpec {
            unanswerable: true,
            ..small()
        };
        for task in Task::ALL {
            let (a, b, c) = (tmp(), tmp(), tmp());
            let ra = write(task, &spec, a.path())?;
            let rb = write(task, &spec, b.path())?;
            let rc = write(task, &WorldSpec { seed: 99, ..spec }, c.path())?;
            assert_eq!(read(&ra.train), read(&rb.train), "{task}");
            assert_eq!(read(&ra.test), read(&rb.test), "{task}");
            assert_ne!(read(&ra.train), read(&rc.train), "{task}");
            for (x, y) in ra.extra.iter().zip(&rb.extra) {
                assert_eq!(read(x), read(y));
            }
            assert!(read(&ra.train).is_ascii());
        }
        Ok(())
    }

    #[test]
    fn generated_files_load_back_with_expected_counts() -> Result<(), DataError> {
        let spec = small();
        let facts = 30 * 4;
        let expected = [
            (Task::Nq, facts * 3, facts),
            (Task::Squad, facts, facts),
            (Task::Gsm8k, 30, 7),
            (Task::MetaMath, 30, 7),
            (Task::ToolBench, 30, 7),
        ];
        for (task, n_train, n_test) in expected {
            let dir = tmp();
            let report = write(task, &spec, dir.path())?;
            assert_eq!(
                (report.train_records, report.test_records),
                (n_train, n_test),
                "{task}"
            );
            let train = load(task, &report.train)?;
            let test = load(task, &report.test)?;
            assert_eq!((train.len(), test.len()), (n_train, n_test), "{task}");
            let train_ids: HashSet<&str> = train.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(train_ids.len(), n_train, "{task} ids are unique");
            assert!(
                train.iter().chain(&test).all(|e| !e.gold.is_empty()),
                "{task}"
            );
        }
        Ok(())
    }

    #[test]
    fn nq_tests_hold_out_a_wording() -> Result<(), DataError> {
        let dir = tmp();
        let report = write(Task::Nq, &small(), dir.path())?;
        let train = load(Task::Nq, &report.train)?;
        let test = load(Task::Nq, &report.test)?;
        let train_q: HashSet<&str> = train.iter().map(|e| e.instruction.as_str()).collect();
        assert!(test
            .iter()
            .all(|e| !train_q.contains(e.instruction.as_str())));
        let knowledge = fs::read_to_string(dir.path().join("knowledge.txt"))
            .map_err(|e| DataError::io(dir.path(), e))?;
        assert_eq!(knowledge.lines().count(), 30 * 4);
        // every test answer is stated in the knowledge lines
        assert!(test.iter().all(|e| knowledge.contains(&e.gold[0])));
        Ok(())
    }

    #[test]
    fn squad_offsets_point_at_answers() -> Result<(), DataError> {
        let dir = tmp();
        let spec = WorldSpec {
            unanswerable: true,
            ..small()
        };
        let report = write(Task::Squad, &spec, dir.path())?;
        let text =
            fs::read_to_string(&report.train).map_err(|e| DataError::io(&report.train, e))?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| DataError::io(&report.train, std::io::Error::other(e)))?;
        assert_eq!(doc["version"], "v2.0");
        let mut checked = 0;
        let mut impossible = 0;
        for article in doc["data"].as_array().into_iter().flatten() {
            for para in article["paragraphs"].as_array().into_iter().flatten() {
                let context = para["context"].as_str().unwrap_or_default();
                for qa in para["qas"].as_array().into_iter().flatten() {
                    if qa["is_impossible"] == true {
                        impossible += 1;
                    }
                    for answer in qa["answers"].as_array().into_iter().flatten() {
                        let start = answer["answer_start"].as_u64().unwrap_or(u64::MAX) as usize;
                        let want = answer["text"].as_str().unwrap_or_default();
                        let got: String = context
                            .chars()
                            .skip(start)
                            .take(want.chars().count())
                            .collect();
                        assert_eq!(got, want);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 30 * 4);
        assert_eq!(impossible, 30);
        let loaded = load(Task::Squad, &report.train)?;
        assert_eq!(loaded.iter().filter(|e| e.gold.is_empty()).count(), 30);
        Ok(())
    }

    #[test]
    fn arithmetic_solutions_are_right() -> Result<(), DataError> {
        let dir = tmp();
        let report = write(Task::Gsm8k, &small(), dir.path())?;
        for ex in load(Task::Gsm8k, &report.train)? {
            // every <<expr=value>> annotation holds
            for ann in ex.target.split("<<").skip(1) {
                let inner = ann.split(">>").next().unwrap_or_default();
                let (expr, value) = inner.split_once('=').unwrap_or_default();
                let value: i64 = value.parse().unwrap_or(i64::MIN);
                let op_at = expr.find(['+', '-', '*', '/']).unwrap_or(0);
                let (a, b) = (&expr[..op_at], &expr[op_at + 1..]);
                let (a, b): (i64, i64) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                let got = match &expr[op_at..op_at + 1] {
                    "+" => a + b,
                    "-" => a - b,
                    "*" => a * b,
                    _ => a / b,
                };
                assert_eq!(got, value, "{inner}");
            }
            assert!(
                ex.gold[0].parse::<i64>().is_ok_and(|n| n >= 0),
                "{}",
                ex.gold[0]
            );
        }
        Ok(())
    }

    #[test]
    fn toolbench_targets_name_the_relevant_apis() -> Result<(), DataError> {
        let spec = small();
        let mut rng = task_rng(&spec, Task::ToolBench);
        let apis = catalogue(&spec, &mut rng);
        let dir = tmp();
        let report = write(Task::ToolBench, &spec, dir.path())?;
        let train = load(Task::ToolBench, &report.train)?;
        // the first record's first block is its first relevant API's block
        let first: serde_json::Value = serde_json::from_slice(&read(&report.train))
            .map_err(|e| DataError::io(&report.train, std::io::Error::other(e)))?;
        let [tool, api] = [
            &first[0]["relevant APIs"][0][0],
            &first[0]["relevant APIs"][0][1],
        ];
        let entry = apis
            .iter()
            .map(|a| &a.api)
            .find(|a| tool == a.tool_name.as_str() && api == a.api_name.as_str())
            .unwrap_or_else(|| panic!("relevant API not in catalogue"));
        let block = crate::data::answer::api_block(
            &entry.tool_name,
            &entry.api_name,
            &entry.category_name,
            &entry.api_description,
        );
        assert_eq!(train[0].gold[0], block);
        assert!(block.starts_with("API MAIN INFO: "));
        for ex in load(Task::ToolBench, &report.test)? {
            assert!(ex.id.parse::<u64>().is_ok_and(|id| id >= 1_000_000));
            assert!(!ex.gold.is_empty() && ex.gold.len() <= 3);
        }
        Ok(())
    }

    #[test]
    fn bad_specs_are_rejected() {
        let dir = tmp();
        for spec in [
            WorldSpec {
                entities: 0,
                ..small()
            },
            WorldSpec { pool: 1, ..small() },
            WorldSpec {
                attributes: 9,
                ..small()
            },
        ] {
            let err = write(Task::Nq, &spec, dir.path())
                .err()
                .map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.contains("must be between")));
        }
    }
}
