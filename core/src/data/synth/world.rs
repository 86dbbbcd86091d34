//! The people of a synthetic world and their facts: the kinds of fact, how
//! each is stated and asked, and drawing a world from its spec.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::names::{capitalise, fresh_name, pick, pool_word};
use super::{WorldSpec, MAX_ENTITIES, MAX_POOL};

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

    /// The declarative line of a fact in two halves, before and after its
    /// value, so a caller can note where the value starts.
    pub(super) fn statement_around(self, name: &str) -> (String, String) {
        let statement = self.wording().statement;
        let (before, after) = statement.split_once("{v}").unwrap_or((statement, ""));
        (before.replace("{n}", name), after.replace("{n}", name))
    }

    /// Question wording `i` (0–2 train, 3 test) in NQ-open's style: lower
    /// case start, no question mark.
    pub fn question(self, name: &str, i: usize) -> String {
        let questions = self.wording().questions;
        questions[i.min(questions.len() - 1)].replace("{n}", name)
    }
}

pub(super) const TRAIN_WORDINGS: usize = 3;
pub(super) const TEST_WORDING: usize = 3;

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

// Endings of each attribute's values.
const TOWNS: [&str; 8] = [
    "holm", "ford", "wick", "mouth", "by", "stead", "vale", "port",
];
const EMPLOYERS: [&str; 8] = [
    "Works", "Foundry", "Guild", "Mills", "Press", "Company", "Lines", "Yards",
];
const INSTRUMENTS: [&str; 8] = [
    "horn", "lute", "pipe", "drum", "harp", "fiddle", "bell", "flute",
];
const COLOURS: [&str; 8] = [
    "blue", "green", "red", "grey", "gold", "violet", "amber", "white",
];
const DISHES: [&str; 8] = [
    "stew",
    "pie",
    "cake",
    "broth",
    "bread",
    "dumplings",
    "tart",
    "soup",
];
const SHIPS: [&str; 8] = [
    "Star", "Wave", "Gull", "Crown", "Lark", "Tern", "Comet", "Reed",
];
const STREETS: [&str; 8] = [
    "Lane", "Row", "Street", "Walk", "Hill", "Yard", "Close", "Road",
];

/// A value of `attribute`: an invented word and an ending drawn from the
/// attribute's list, as one word or two, capitalised where a proper name
/// would be; years are plain numbers.
fn pool_value(attribute: Attribute, rng: &mut ChaCha8Rng) -> String {
    let word = pool_word(rng);
    let (endings, two_words, proper) = match attribute {
        Attribute::Year => return rng.random_range(1600..2000).to_string(),
        Attribute::Town => (TOWNS, false, true),
        Attribute::Employer => (EMPLOYERS, true, true),
        Attribute::Instrument => (INSTRUMENTS, false, false),
        Attribute::Colour => (COLOURS, true, false),
        Attribute::Dish => (DISHES, true, false),
        Attribute::Ship => (SHIPS, true, true),
        Attribute::Street => (STREETS, true, true),
    };
    let ending = pick(rng, &endings);
    let word = if proper { capitalise(&word) } else { word };
    let space = if two_words { " " } else { "" };
    format!("{word}{space}{ending}")
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
pub(super) fn stream_seed(seed: u64, namespace: u64, purpose: u64) -> u64 {
    let mut z = seed
        ^ namespace.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ purpose.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::tests::small;

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
    }
}
