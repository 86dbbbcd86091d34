//! The answer grammar of the task formats: how GSM8K and MetaMathQA state a
//! final number and how a ToolBench answer block names an API. The loaders
//! read gold answers with it and the metrics read predictions with it, so
//! both sides agree on one spelling.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

// Patterns are constants checked by a test; an `Option` keeps a typo from
// ever becoming a panic in a user's run.
static GSM8K_ANSWER: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"#### (-?[0-9.,]+)").ok());
static BLANK_LINE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\n[ \t\r]*\n").ok());

/// Prefix of every ToolBench answer block; `api_keys` strips it again.
pub const API_BLOCK_PREFIX: &str = "API MAIN INFO: ";

/// The number after `#### `, commas dropped, as GSM8K writes its answers.
pub fn gsm8k_number(text: &str) -> Option<String> {
    let caps = GSM8K_ANSWER.as_ref()?.captures(text)?;
    Some(caps.get(1)?.as_str().replace(',', ""))
}

/// The answer MetaMathQA writes after `The answer is:`, trimmed (the last
/// one, should a response state several).
pub fn metamath_answer(text: &str) -> Option<String> {
    let (_, after) = text.rsplit_once("The answer is:")?;
    let answer = after.trim();
    (!answer.is_empty()).then(|| answer.to_string())
}

/// One answer block: `API MAIN INFO: tool, api, category, description`.
/// The first three comma fields identify the API (tool, API, category, in
/// that fixed order), which is what `tool_iou` compares. Commas and line
/// breaks inside the identifying fields would shift or split them, so they
/// are replaced by spaces.
pub fn api_block(tool: &str, api: &str, category: &str, description: &str) -> String {
    let field = |s: &str| s.replace([',', '\n', '\r'], " ").trim().to_string();
    let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "{API_BLOCK_PREFIX}{}, {}, {}, {}",
        field(tool),
        field(api),
        field(category),
        description
    )
}

/// The identity of each answer block in `texts`: its first three comma
/// fields (tool, API, category), lower-cased. Blocks are separated by blank
/// lines, so one joined target reads the same as its blocks one by one.
pub fn api_keys<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for text in texts {
        let text = text.replace(API_BLOCK_PREFIX, "");
        let blocks: Vec<&str> = match BLANK_LINE.as_ref() {
            Some(re) => re.split(&text).collect(),
            None => text.split("\n\n").collect(),
        };
        for block in blocks {
            let block = block.trim();
            if block.is_empty() {
                continue;
            }
            let key: Vec<String> = block
                .split(',')
                .take(3)
                .map(|f| f.trim().to_lowercase())
                .collect();
            keys.insert(key.join(","));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert!(GSM8K_ANSWER.is_some());
        assert!(BLANK_LINE.is_some());
    }

    #[test]
    fn gsm8k_number_from_the_worked_example() {
        let answer = "4 * 18 = <<4*18=72>>72 rolls.\n72 - 36 = <<72-36=36>>36\n#### 36";
        assert_eq!(gsm8k_number(answer).as_deref(), Some("36"));
        assert_eq!(gsm8k_number("#### 1,250").as_deref(), Some("1250"));
        assert_eq!(gsm8k_number("#### -4").as_deref(), Some("-4"));
        assert_eq!(gsm8k_number("the answer is 36"), None);
    }

    #[test]
    fn metamath_answer_is_the_last_one_stated() {
        assert_eq!(
            metamath_answer("x\nThe answer is: 12 ").as_deref(),
            Some("12")
        );
        assert_eq!(
            metamath_answer("The answer is: 3\nThe answer is: 4").as_deref(),
            Some("4")
        );
        assert_eq!(metamath_answer("The answer is:  "), None);
    }

    #[test]
    fn api_blocks_read_back_as_their_keys() {
        let block = api_block("Sky, loom", "Fore\ncast", "Weather", "Daily\n  forecast.");
        assert_eq!(
            block,
            "API MAIN INFO: Sky  loom, Fore cast, Weather, Daily forecast."
        );
        let two = format!("{block}\n \nAPI MAIN INFO: Tidemark, TideTable, Travel, x");
        let keys: Vec<String> = api_keys([two.as_str()]).into_iter().collect();
        assert_eq!(
            keys,
            vec!["sky  loom,fore cast,weather", "tidemark,tidetable,travel"]
        );
    }
}
