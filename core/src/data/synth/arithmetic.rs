//! Arithmetic word problems about the people of a world, written as GSM8K
//! solutions (with `<<a*b=c>>` annotations) and as MetaMathQA responses.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::world::World;
use super::{draw_splits, WorldSpec};
use crate::data::formats::gsm8k::Gsm8kRow;
use crate::data::formats::metamath::MetaMathRow;

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

pub(super) struct Problem {
    question: String,
    /// The working before the last step.
    steps: Vec<Step>,
    /// The step whose value is the answer.
    last: Step,
}

impl Problem {
    fn answer(&self) -> i64 {
        self.last.value()
    }

    fn lines(&self, annotate: bool) -> Vec<String> {
        self.steps
            .iter()
            .chain([&self.last])
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

    pub(super) fn gsm8k(&self) -> Gsm8kRow {
        Gsm8kRow {
            id: None,
            question: self.question.clone(),
            answer: format!("{}\n#### {}", self.lines(true).join("\n"), self.answer()),
        }
    }

    pub(super) fn metamath(&self) -> MetaMathRow {
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
                steps: vec![step(a, '*', b, "rolls")],
                last: step(p, '-', c, "rolls"),
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
                steps: vec![step(a, '*', b, "pencils"), step(c, '*', d, "pencils")],
                last: step(p, '-', q, "pencils"),
            }
        }
        2 => {
            let a = rng.random_range(8..40);
            let b = rng.random_range(2..10);
            let c = rng.random_range(2..7);
            let p = a * b;
            Problem {
                question: format!("{name} earns {a} dollars an hour and works {b} hours a day. How many dollars does {name} earn in {c} days?"),
                steps: vec![step(a, '*', b, "dollars")],
                last: step(p, '*', c, "dollars"),
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
                steps: vec![step(a, '+', b, "shells"), step(total, '/', c, "shells")],
                last: step(per, '+', d, "things"),
            }
        }
        _ => {
            let a = rng.random_range(6..30);
            let b = rng.random_range(2..12);
            let c = rng.random_range(1..a * b);
            let p = a * b;
            Problem {
                question: format!("A crate holds {a} jars. {name} fills {b} crates and then breaks {c} jars. How many whole jars are there?"),
                steps: vec![step(a, '*', b, "jars")],
                last: step(p, '-', c, ""),
            }
        }
    }
}

/// Problems about random people of the world; train and test never share a
/// question.
pub(super) fn arithmetic_problems(
    world: &World,
    spec: &WorldSpec,
    rng: &mut ChaCha8Rng,
) -> (Vec<Problem>, Vec<Problem>) {
    let mut seen = HashSet::new();
    draw_splits(spec, |_| {
        let entity = &world.entities[rng.random_range(0..world.entities.len())];
        let p = problem(&entity.name, rng);
        seen.insert(p.question.clone()).then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use crate::data::synth::tests::{small, written};
    use crate::data::{load, DataError, Task};

    #[test]
    fn arithmetic_solutions_are_right() -> Result<(), DataError> {
        let (_dir, report) = written(Task::Gsm8k, &small())?;
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
}
