//! Replay: the dashboard over a recorded event stream. The state shown for
//! step N is the reducer applied to every event up to (and including) step
//! N's, so a replay shows exactly what the live dashboard showed then.

use crate::event::Event;
use crate::tui::dashboard::ReplayPosition;
use crate::tui::state::{DashboardState, ViewOptions};

/// The state after every event up to `step` (all events when `None`).
pub fn state_at(events: &[Event], step: Option<u64>, view: ViewOptions) -> DashboardState {
    let mut state = DashboardState::new(view);
    for ev in events {
        if let (Some(limit), Event::Step(s)) = (step, ev) {
            if s.step > limit {
                // More was recorded: at this step the run went on.
                return state;
            }
        }
        state.apply(ev);
    }
    state.end_of_record();
    state
}

/// The training steps a log recorded, in order.
pub fn recorded_steps(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s.step),
            _ => None,
        })
        .collect()
}

/// Check that `step` lies within the steps the log recorded; the error is
/// one line a person can act on.
pub fn check_step(events: &[Event], step: u64) -> Result<(), String> {
    let steps = recorded_steps(events);
    match (steps.iter().min(), steps.iter().max()) {
        (Some(&lo), Some(&hi)) if (lo..=hi).contains(&step) => Ok(()),
        (Some(&lo), Some(&hi)) => Err(format!(
            "--step {step}: this run recorded steps {lo} to {hi}"
        )),
        _ => Err(format!("--step {step}: this run recorded no steps")),
    }
}

/// A recorded run and a cursor over its training steps.
#[derive(Debug, Clone)]
pub struct Replay {
    events: Vec<Event>,
    steps: Vec<u64>,
    cursor: usize,
}

impl Replay {
    /// Starts at the last step, where the run ended.
    pub fn new(events: Vec<Event>) -> Self {
        let steps = recorded_steps(&events);
        let cursor = steps.len().saturating_sub(1);
        Self {
            events,
            steps,
            cursor,
        }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The step the cursor stands on (None for a run without steps).
    pub fn step(&self) -> Option<u64> {
        self.steps.get(self.cursor).copied()
    }

    pub fn state(&self, view: ViewOptions) -> DashboardState {
        // At the last step everything recorded is shown, Finished included.
        let limit = if self.cursor + 1 >= self.steps.len() {
            None
        } else {
            self.step()
        };
        state_at(&self.events, limit, view)
    }

    /// Move by `delta` recorded steps, clamped to the ends.
    pub fn seek(&mut self, delta: i64) {
        let last = self.steps.len().saturating_sub(1) as i64;
        self.cursor = (self.cursor as i64 + delta).clamp(0, last.max(0)) as usize;
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.steps.len().saturating_sub(1);
    }

    pub fn position(&self) -> ReplayPosition {
        ReplayPosition {
            index: if self.steps.is_empty() {
                0
            } else {
                self.cursor + 1
            },
            count: self.steps.len(),
        }
    }
}

pub use crate::train::read_events;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;
    use crate::tui::state::Phase;

    #[test]
    fn seeking_replays_up_to_the_step() {
        let mut r = Replay::new(fixtures::run_events(30, true));
        assert_eq!(r.step(), Some(30));
        assert_eq!(r.state(ViewOptions::default()).phase, Phase::Finished);
        r.seek(-10);
        assert_eq!(r.step(), Some(20));
        let s = r.state(ViewOptions::default());
        assert_eq!(s.step(), 20);
        assert_eq!(s.phase, Phase::Running);
        // The checkpoint written right after step 20 belongs to step 20.
        assert_eq!(s.last_checkpoint.as_ref().map(|c| c.0), Some(20));
        r.home();
        assert_eq!(r.step(), Some(1));
        r.seek(-5);
        assert_eq!(r.step(), Some(1));
        r.end();
        assert_eq!(r.position().index, 30);
    }

    #[test]
    fn reads_a_log_and_names_the_bad_line() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut text = String::new();
        for e in fixtures::run_events(3, false) {
            text.push_str(&serde_json::to_string(&e)?);
            text.push('\n');
        }
        std::fs::write(dir.path().join("events.jsonl"), &text)?;
        assert_eq!(
            read_events(dir.path())?.len(),
            fixtures::run_events(3, false).len()
        );

        text.push_str("{\"type\":\"bogus\"}\n{\"type\":\"message\",\"text\":\"x\"}\n");
        std::fs::write(dir.path().join("events.jsonl"), &text)?;
        let err = read_events(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let bad_line = fixtures::run_events(3, false).len() + 1;
        assert!(err.contains(&format!("events.jsonl:{bad_line}:")), "{err}");
        Ok(())
    }
}
