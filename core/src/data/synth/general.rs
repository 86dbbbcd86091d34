//! The facts of a world in the general formats: alpaca instructions
//! answered by the fact's sentence, conversations (ShareGPT and messages)
//! of two questions about one person under a system message, and each
//! person's biography as raw text. Train and test ask in different
//! wordings, as the NQ rows do.

use super::names::capitalise;
use super::world::{Attribute, World, TEST_WORDING, TRAIN_WORDINGS};
use crate::data::chat::{Message, Role};
use crate::data::formats::alpaca::AlpacaRow;
use crate::data::formats::messages::MessagesRow;
use crate::data::formats::sharegpt::{ShareGptRow, Turn};
use crate::data::formats::text::TextRow;

/// The system message of every synthetic conversation.
pub(super) const SYSTEM: &str = "You answer questions about the people of the registry.";

fn ask(attribute: Attribute, name: &str, wording: usize) -> String {
    format!("{}?", capitalise(&attribute.question(name, wording)))
}

fn split_by_wording<T>(mut rows: impl FnMut(usize) -> Vec<T>) -> (Vec<T>, Vec<T>) {
    let train = (0..TRAIN_WORDINGS).flat_map(&mut rows).collect();
    (train, rows(TEST_WORDING))
}

pub(super) fn alpaca_rows(world: &World) -> (Vec<AlpacaRow>, Vec<AlpacaRow>) {
    split_by_wording(|wording| {
        let mut out = Vec::new();
        for entity in &world.entities {
            for fact in &entity.facts {
                out.push(AlpacaRow {
                    id: None,
                    instruction: ask(fact.attribute, &entity.name, wording),
                    input: None,
                    output: fact.attribute.statement(&entity.name, &fact.value),
                    system: None,
                    history: None,
                });
            }
        }
        out
    })
}

/// Per person, the facts two at a time, each pair one conversation of two
/// questions and their answers after the system message.
fn conversations(world: &World, wording: usize) -> Vec<Vec<Message>> {
    let mut out = Vec::new();
    for entity in &world.entities {
        for pair in entity.facts.chunks(2) {
            let mut turns = vec![Message::new(Role::System, SYSTEM)];
            for fact in pair {
                turns.push(Message::new(
                    Role::User,
                    ask(fact.attribute, &entity.name, wording),
                ));
                turns.push(Message::new(
                    Role::Assistant,
                    fact.attribute.statement(&entity.name, &fact.value),
                ));
            }
            out.push(turns);
        }
    }
    out
}

pub(super) fn message_rows(world: &World) -> (Vec<MessagesRow>, Vec<MessagesRow>) {
    split_by_wording(|w| {
        conversations(world, w)
            .into_iter()
            .map(|messages| MessagesRow { messages })
            .collect()
    })
}

/// ShareGPT's spelling of a conversation: the system message in its own
/// field, the speakers `human` and `gpt`.
fn sharegpt_row(turns: &[Message]) -> ShareGptRow {
    let system = turns
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.clone());
    let turns = turns
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| Turn {
            from: if m.role == Role::User { "human" } else { "gpt" }.to_string(),
            value: m.content.clone(),
        })
        .collect();
    ShareGptRow {
        conversations: turns,
        system,
    }
}

pub(super) fn sharegpt_rows(world: &World) -> (Vec<ShareGptRow>, Vec<ShareGptRow>) {
    split_by_wording(|w| {
        conversations(world, w)
            .iter()
            .map(|c| sharegpt_row(c))
            .collect()
    })
}

/// Each person's facts as one paragraph; the held-out documents are a
/// quarter of the people with their sentences in the reverse order.
pub(super) fn text_rows(world: &World) -> (Vec<TextRow>, Vec<TextRow>) {
    let sentences = |e: &super::Entity| -> Vec<String> {
        e.facts
            .iter()
            .map(|f| f.attribute.statement(&e.name, &f.value))
            .collect()
    };
    let row = |text: String| TextRow { id: None, text };
    let train = world
        .entities
        .iter()
        .map(|e| row(sentences(e).join(" ")))
        .collect();
    let n_test = (world.entities.len() / 4).max(1);
    let test = world
        .entities
        .iter()
        .take(n_test)
        .map(|e| {
            let mut s = sentences(e);
            s.reverse();
            row(s.join(" "))
        })
        .collect();
    (train, test)
}
