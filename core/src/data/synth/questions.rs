//! The facts of a world asked as questions: NQ-open rows in three training
//! wordings and a held-out test wording, the knowledge lines that state them,
//! and SQuAD biographies whose questions point into the text.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::names::{capitalise, fresh_name};
use super::world::{Attribute, World, TEST_WORDING, TRAIN_WORDINGS};
use super::{shuffle, Split, WorldSpec};
use crate::data::formats::nq::NqRow;
use crate::data::formats::squad::{SquadAnswer, SquadArticle, SquadDoc, SquadParagraph, SquadQa};
use crate::data::formats::Id;

pub(super) fn nq_rows(world: &World) -> (Vec<NqRow>, Vec<NqRow>) {
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

pub(super) fn knowledge_text(world: &World) -> String {
    let mut out = String::new();
    for entity in &world.entities {
        for fact in &entity.facts {
            out.push_str(&fact.attribute.statement(&entity.name, &fact.value));
            out.push('\n');
        }
    }
    out
}

fn squad_question(attribute: Attribute, name: &str, wording: usize) -> String {
    format!("{}?", capitalise(&attribute.question(name, wording)))
}

/// Biography contexts with the facts in a shuffled order, and character
/// offsets recorded as each sentence is placed. Train and test share the
/// contexts and ask in different wordings.
pub(super) fn squad_doc(
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
        shuffle(rng, &mut order);
        let mut context = String::new();
        let mut starts = vec![0; entity.facts.len()];
        for &f in &order {
            let fact = &entity.facts[f];
            if !context.is_empty() {
                context.push(' ');
            }
            let (before, after) = fact.attribute.statement_around(&entity.name);
            context.push_str(&before);
            starts[f] = context.chars().count();
            context.push_str(&fact.value);
            context.push_str(&after);
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;

    use crate::data::synth::tests::{small, written};
    use crate::data::synth::WorldSpec;
    use crate::data::{load, DataError, Task};

    #[test]
    fn nq_tests_hold_out_a_wording() -> Result<(), DataError> {
        let (dir, report) = written(Task::Nq, &small())?;
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
        let spec = WorldSpec {
            unanswerable: true,
            ..small()
        };
        let (_dir, report) = written(Task::Squad, &spec)?;
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
}
