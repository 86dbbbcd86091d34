//! An invented API catalogue and ToolBench queries that ask for one to
//! three of its APIs about the towns of a world, among distractors.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::names::{capitalise, pick, pool_word};
use super::world::World;
use super::{draw_splits, shuffle, split_sizes, WorldSpec};
use crate::data::formats::toolbench::{ToolApi, ToolParam, ToolQuery};
use crate::data::formats::Id;

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
pub(super) struct OfferedApi {
    api: ToolApi,
    ask: &'static str,
}

/// The endings of tool names. A tool's name is a two-syllable pool word
/// (four letters) and an ending, so worlds of different ending sets never
/// share a tool: the presets' namespace 0 keeps its own, the pretraining
/// worlds of every other namespace another.
fn tool_endings(namespace: u64) -> &'static [&'static str] {
    if namespace == 0 {
        &["cast", "mark", "loom", "ly", "hub", "wise", "line", "post"]
    } else {
        &["net", "desk", "ware", "dock", "kit", "base", "scope", "lab"]
    }
}

/// Invented tools, each in one category and offering two or three of its
/// API kinds.
pub(super) fn catalogue(spec: &WorldSpec, rng: &mut ChaCha8Rng) -> Vec<OfferedApi> {
    let n_tools = spec.pool.clamp(4, 200);
    let mut names = HashSet::new();
    let mut apis = Vec::new();
    while names.len() < n_tools {
        let end = pick(rng, tool_endings(spec.namespace));
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

pub(super) fn tool_queries(
    world: &World,
    spec: &WorldSpec,
    apis: &[OfferedApi],
    rng: &mut ChaCha8Rng,
) -> (Vec<ToolQuery>, Vec<ToolQuery>) {
    let (n_train, _) = split_sizes(spec);
    let mut seen = HashSet::new();
    draw_splits(spec, |index| {
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
            return None;
        }
        let mut list: Vec<usize> = chosen.clone();
        let distractors = rng.random_range(1..=3usize);
        for _ in 0..distractors {
            let i = rng.random_range(0..apis.len());
            if !list.contains(&i) {
                list.push(i);
            }
        }
        shuffle(rng, &mut list);
        let id = index as u64;
        let query_id = if id < n_train as u64 {
            id
        } else {
            1_000_000 + id
        };
        Some(ToolQuery {
            query,
            query_id: Id::Number(query_id.into()),
            api_list: list.iter().map(|&i| apis[i].api.clone()).collect(),
            relevant: chosen
                .iter()
                .map(|&i| vec![apis[i].api.tool_name.clone(), apis[i].api.api_name.clone()])
                .collect(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::task_rng;
    use crate::data::synth::tests::{read, small, written};
    use crate::data::{load, DataError, Task};

    #[test]
    fn other_namespaces_never_name_a_presets_tool() {
        let names = |namespace: u64, pool: usize| -> HashSet<String> {
            let spec = WorldSpec {
                namespace,
                pool,
                ..small()
            };
            let mut rng = task_rng(&spec, Task::ToolBench);
            catalogue(&spec, &mut rng)
                .into_iter()
                .map(|a| a.api.tool_name)
                .collect()
        };
        let preset = names(0, 200);
        let pretraining = names(1, 200);
        assert_eq!((preset.len(), pretraining.len()), (200, 200));
        assert!(preset.is_disjoint(&pretraining));
    }

    #[test]
    fn toolbench_targets_name_the_relevant_apis() -> Result<(), DataError> {
        let spec = small();
        let mut rng = task_rng(&spec, Task::ToolBench);
        let apis = catalogue(&spec, &mut rng);
        let (_dir, report) = written(Task::ToolBench, &spec)?;
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
}
