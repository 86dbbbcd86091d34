//! What the setup screen needs from the rest of the program: a launcher that
//! starts the real trainer in a new run directory, and a previewer that asks
//! the planner what a configuration will cost.

use super::{CostPreview, Launcher, Previewer};
use crate::config::Experiment;
use crate::telemetry::plan;
use crate::train::RunHandle;
use crate::units::bytes;
use std::path::PathBuf;

/// Starts runs under `root` (one directory per run).
pub struct RunLauncher {
    pub root: PathBuf,
}

impl Launcher for RunLauncher {
    fn start(&mut self, exp: &Experiment) -> Result<RunHandle, String> {
        let flat = |e: anyhow::Error| crate::fsx::error_line(&e);
        exp.validate().map_err(|e| e.to_string())?;
        let dir = crate::train::new_run_dir(&self.root, &exp.name).map_err(flat)?;
        crate::train::start(exp.clone(), dir, false).map_err(flat)
    }
}

/// The planner's prediction as label/value lines for the setup screen.
pub fn planner_preview() -> Previewer {
    Box::new(|exp: &Experiment| {
        let model = match crate::model::shapes::shape_of(&exp.model.reference) {
            Ok(m) => m,
            Err(e) => {
                return CostPreview {
                    error: Some(crate::fsx::one_line(e)),
                    ..Default::default()
                }
            }
        };
        let input = plan::PlanInput {
            base_dtype_bytes: exp.model.dtype.bytes(),
            ..plan::PlanInput::new(exp, &model)
        };
        let p = match plan::plan(&input) {
            Ok(p) => p,
            Err(e) => {
                return CostPreview {
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        let mut lines = Vec::new();
        let parts = |l: &crate::event::Ledger| {
            l.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {}", bytes(*v)))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        lines.push((
            "device".to_string(),
            format!("{}  {}", bytes(p.device_total), parts(&p.device)),
        ));
        lines.push((
            "host".to_string(),
            format!("{}  {}", bytes(p.host_total), parts(&p.host)),
        ));
        let t = &p.traffic;
        if t.h2d() + t.d2h() > 0 {
            lines.push((
                "bytes/step".to_string(),
                format!("H→D {} · D→H {}", bytes(t.h2d()), bytes(t.d2h())),
            ));
            if let Some(r) = p.offload_ratio() {
                lines.push((
                    "dense offload".to_string(),
                    format!("{}/step (MEFT {:.2}×)", bytes(p.dense_offload), r),
                ));
            }
        }
        lines.push((
            "model".to_string(),
            format!("{} layers · d {}", model.num_layers, model.hidden_size),
        ));
        for n in p.notes.iter().take(2) {
            lines.push(("note".to_string(), n.clone()));
        }
        CostPreview {
            lines,
            fits: p.fits,
            error: None,
        }
    })
}
