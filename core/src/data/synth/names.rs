//! The words of a synthetic world: people's names, unique within a world
//! and never shared between namespaces, and the invented words its towns,
//! employers, tools and the rest are made of.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

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

pub(super) fn capitalise(word: &str) -> String {
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
pub(super) fn fresh_name(
    rng: &mut ChaCha8Rng,
    namespace: u64,
    taken: &mut HashSet<String>,
) -> String {
    loop {
        let name = person_name(rng, namespace);
        if taken.insert(name.clone()) {
            return name;
        }
    }
}

pub(super) fn pool_word(rng: &mut ChaCha8Rng) -> String {
    format!(
        "{}{}",
        syllable(rng.random_range(0..SYLLABLES)),
        syllable(rng.random_range(0..SYLLABLES))
    )
}

pub(super) fn pick<'a>(rng: &mut ChaCha8Rng, items: &'a [&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_words_of_different_namespaces_differ_for_every_draw() {
        let a: HashSet<String> = (0..2450).map(|k| family_word(3, k)).collect();
        let b: HashSet<String> = (0..2450).map(|k| family_word(19, k)).collect();
        assert_eq!(a.len(), 2450);
        assert!(a.is_disjoint(&b));
    }
}
