//! The `meft` command line: parse, dispatch, report errors as one line.

use anyhow::Result;
use clap::{Parser, Subcommand};
use meft::model::generate::GenerateOptions;
use meft::train::headless;

#[derive(Parser)]
#[command(
    name = "meft",
    version,
    about = "Memory-efficient fine-tuning with sparse adapters offloaded to host memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a synthetic dataset in a task's real format (train and test files).
    Synth {
        /// The format to write: nq, squad, gsm8k, metamath, toolbench, alpaca,
        /// sharegpt, messages or text.
        #[arg(long)]
        task: meft::data::Task,
        /// Entities in the generated world (each gives a few records).
        #[arg(long, default_value_t = 200)]
        entities: usize,
        /// Seed of the generator: the same seed writes the same files.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Distinct values per attribute.
        #[arg(long, default_value_t = 24)]
        pool: usize,
        /// Keeps worlds apart: different namespaces never share a name.
        #[arg(long, default_value_t = 0)]
        namespace: u64,
        /// SQuAD only: add unanswerable questions (written as v2.0).
        #[arg(long)]
        unanswerable: bool,
        /// Directory to write the train and test files into.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Load a dataset file and report its records, or the first bad one;
    /// then its length in the model's tokens against the cut-off and its
    /// first record as the model sees it, trained spans marked.
    Check {
        /// The format to read the file as: nq, squad, gsm8k, metamath,
        /// toolbench, alpaca, sharegpt, messages or text (JSON, JSONL or
        /// Parquet).
        #[arg(long)]
        format: meft::data::Task,
        /// The dataset file to check.
        file: std::path::PathBuf,
        /// Take model, template, cut-off and column names from this
        /// experiment file.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// The model whose tokenizer measures the records (default: the
        /// config's, else embedded:tiny).
        #[arg(long)]
        model: Option<String>,
        /// The template the records are rendered with (alpaca, plain,
        /// model, chatml, llama3, gemma, mistral).
        #[arg(long)]
        template: Option<meft::config::Template>,
        /// The cut-off the lengths are measured against (train.cutoff_len).
        #[arg(long)]
        cutoff_len: Option<usize>,
        /// A column of the user's file: KEY=NAME, as data.columns.KEY.
        #[arg(long = "column", value_name = "KEY=NAME")]
        columns: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The interactive workbench: set up a run, then watch it live.
    Tui {
        /// Start from this experiment file instead of the defaults.
        #[arg(long)]
        preset: Option<std::path::PathBuf>,
        /// Directory that run directories are created in.
        #[arg(long, default_value = "runs")]
        out: std::path::PathBuf,
    },
    /// A recorded run in the dashboard, scrubbable with ←/→ and Home/End.
    Replay {
        /// A run directory (holding events.jsonl) or an events.jsonl file.
        run_dir: std::path::PathBuf,
    },
    /// The dashboard of a run as a picture (.svg, .png) or text (.txt).
    Screenshot {
        /// A run directory (holding events.jsonl) or an events.jsonl file.
        run_dir: std::path::PathBuf,
        /// The file to write; its extension picks the format: .svg, .png or .txt.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Columns x rows of the rendered terminal.
        #[arg(long, default_value = "120x40")]
        size: String,
        /// Show the dashboard as it was at this step (default: the end).
        #[arg(long)]
        step: Option<u64>,
        /// Pixels per cell unit of a PNG: 2 for a sharper picture (0.25 to 8).
        #[arg(long, default_value_t = 1.0)]
        scale: f32,
    },
    /// Train headless: progress, a run directory, a summary table.
    Run {
        /// The experiment (preset) TOML; not needed with --resume.
        config: Option<std::path::PathBuf>,
        /// Override any field: --set method.meft.top_k=64
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Directory that run directories are created in.
        #[arg(long, default_value = "runs")]
        out: std::path::PathBuf,
        /// Continue a run from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<std::path::PathBuf>,
        /// Train in a process of its own, which a closed terminal does not
        /// stop: prints the run directory once training starts and returns
        /// (`meft attach` watches it, `meft stop` stops it).
        #[arg(long)]
        detach: bool,
        /// Train the config.toml already in this new run directory (what
        /// --detach starts).
        #[arg(long, value_name = "RUN_DIR", hide = true, conflicts_with_all = ["config", "resume"])]
        into: Option<std::path::PathBuf>,
    },
    /// The live dashboard of a run another process trains (`meft run
    /// --detach`, the TUI); quitting leaves the run training.
    Attach {
        /// The run directory.
        run_dir: std::path::PathBuf,
    },
    /// Ask a run another process trains for a safe stop (a checkpoint at
    /// the step it reached) and wait for it.
    Stop {
        /// The run directory.
        run_dir: std::path::PathBuf,
    },
    /// Pretrain the embedded tiny base on a synthetic world of its own and
    /// write it to assets/tiny.
    Pretrain {
        /// The model to start from: seeded weights for a base from scratch,
        /// or a base to train further (`embedded:tiny`, `hf:DIR`).
        #[arg(long, default_value = "embedded:tiny-random")]
        from: String,
        /// Entities in the synthetic world the base learns.
        #[arg(long, default_value_t = 100)]
        entities: usize,
        /// ToolBench requests of the same world added to its questions
        /// (answers that copy tool names out of the request).
        #[arg(long, default_value_t = 0)]
        tools: usize,
        /// Seed of the world and of the initial weights.
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Optimizer steps.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        /// Peak learning rate.
        #[arg(long, default_value_t = 3e-3)]
        lr: f64,
        /// Sequences per optimizer step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Tokens per sequence at most.
        #[arg(long, default_value_t = 96)]
        cutoff_len: usize,
        /// Directory the trained base (weights, config, tokenizer) is written to.
        #[arg(long, default_value = "assets/tiny")]
        out: std::path::PathBuf,
    },
    /// Decode a run's test split with its latest checkpoint and score it.
    Eval {
        /// The run directory whose latest checkpoint to evaluate.
        run_dir: std::path::PathBuf,
        /// Score only the first N test rows (default: the run's eval.limit).
        #[arg(long)]
        limit: Option<usize>,
        /// Override the run's config for this evaluation, e.g.
        /// eval.decoding="beam" or eval.beams=4.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Predicted device memory, host memory and bytes per step, with and without MEFT.
    Plan {
        /// The experiment (preset) TOML to plan.
        config: std::path::PathBuf,
        /// Override any field: --set method.meft.neurons=65536
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device memory to check the fit against, e.g. 24GiB.
        #[arg(long)]
        gpu_mem: Option<String>,
        /// Assume |U| = this fraction of M per layer instead of the worst case.
        #[arg(long = "union")]
        union_fraction: Option<f64>,
        /// Measure N, |U| and the rows the host optimizer will touch with
        /// forward passes over the run's first micro-batches (up to this
        /// many) at its initial state; needs the model's weights and data.
        #[arg(long, value_name = "MICRO_BATCHES", num_args = 0..=1, default_missing_value = "64")]
        probe: Option<usize>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The performance table: retrieval, steps, traffic, host optimizer and
    /// memory, measured side by side in this process.
    Bench {
        /// A reduced grid (a few minutes) instead of the full one.
        #[arg(long)]
        quick: bool,
        /// Also write the figures as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
        /// The compute device: cpu (cuda:N needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Instead of the table: time the first `--steps` steps of this
        /// experiment through the trainer's own step, as `meft run` would
        /// take them.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "device"])]
        config: Option<std::path::PathBuf>,
        /// Override any field of `--config`: --set train.batch=8
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
        sets: Vec<String>,
        /// Steps of `--config` to time.
        #[arg(long, default_value_t = 20, requires = "config")]
        steps: usize,
    },
    /// Check the compute device against the CPU reference: the base's
    /// logits, MEFT against the dense reference, LoRA and the Parallel
    /// Adapter, each as one relative error against its limit.
    Selftest {
        /// The compute device: cpu or cuda:N (the latter needs a build with
        /// `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Also write the checks as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
    },
    /// Datasets: synthesise, check.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Score a predictions file against a gold file with every metric of the format.
    Score {
        /// The format of both files: nq, squad, gsm8k or toolbench.
        #[arg(long)]
        format: meft::data::Task,
        /// The dataset file with the reference answers.
        #[arg(long)]
        gold: std::path::PathBuf,
        /// The predictions: a JSON line per record with "id" and "prediction",
        /// or SQuAD's one {"id": "text"} object.
        #[arg(long)]
        pred: std::path::PathBuf,
        /// Print the scores as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Continue a prompt with a base model (greedy or beam search).
    Generate {
        /// embedded:tiny, embedded:tiny-random, hf:DIR, gguf:FILE, or a path
        /// (default: embedded:tiny, or with --adapter the base it was trained on).
        #[arg(long, conflicts_with = "run")]
        model: Option<String>,
        /// Decode with this run's trained adapter on its base instead.
        #[arg(long, value_name = "RUN_DIR", conflicts_with = "adapter")]
        run: Option<std::path::PathBuf>,
        /// Decode with a `meft export --format meft` adapter (its directory
        /// or adapter.safetensors) on --model, which must be the base it was
        /// trained on (checked by the hash of its weights).
        #[arg(long, value_name = "FILE")]
        adapter: Option<std::path::PathBuf>,
        /// With --run: the checkpoint of this step (default: the newest).
        #[arg(long, requires = "run")]
        step: Option<u64>,
        /// The text to continue.
        #[arg(long)]
        prompt: String,
        /// Beam width; 1 decodes greedily.
        #[arg(long, default_value_t = 1)]
        beams: usize,
        /// Penalise tokens already in the text (1 leaves them be, >1 discourages).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        /// Stop after this many new tokens.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Ask the prompt as one user turn in the model's chat markup
        /// (ChatML, Llama 3, Gemma or [INST], recognised by its tokens).
        #[arg(long)]
        chat: bool,
        /// Also write the prompt's tokens and the next-token logits after
        /// it as JSON ({"ids": [...], "logits": [...]}), to compare with
        /// another implementation.
        #[arg(long, value_name = "FILE")]
        logits_out: Option<std::path::PathBuf>,
    },
    /// Talk to a run's model with its trained adapter (or to a base alone):
    /// one message per line, the reply written as it is decoded; /reset,
    /// /system TEXT, Ctrl-D to leave.
    Chat {
        /// The run directory (its base, adapter and template).
        run_dir: Option<std::path::PathBuf>,
        /// The checkpoint of this step (default: the newest).
        #[arg(long, requires = "run_dir")]
        step: Option<u64>,
        /// A `meft export --format meft` adapter instead of a run.
        #[arg(long, value_name = "FILE", conflicts_with = "run_dir")]
        adapter: Option<std::path::PathBuf>,
        /// A base model alone, or the base for --adapter.
        #[arg(long, conflicts_with = "run_dir")]
        model: Option<String>,
        /// The system prompt to start with.
        #[arg(long)]
        system: Option<String>,
        /// Stop each reply after this many tokens.
        #[arg(long, default_value_t = 256)]
        max_new_tokens: usize,
        /// Penalise tokens already in the text (1 leaves them be).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
    },
    /// A run's trained weights in a format other tools load: LoRA as a PEFT
    /// adapter, LoRA or full fine-tuning merged into the base (a Hugging
    /// Face directory or a GGUF file), MEFT or the Parallel Adapter alone,
    /// or the base itself.
    Export {
        /// The run directory.
        run_dir: std::path::PathBuf,
        /// The checkpoint of this step (default: the newest).
        #[arg(long)]
        step: Option<u64>,
        /// peft (LoRA), merged (LoRA, full), gguf (LoRA, full), meft (MEFT,
        /// Parallel Adapter) or base (the base the run trained on).
        #[arg(long)]
        format: meft::config::ExportFormat,
        /// With --format gguf: the matrices in f16 or q8_0.
        #[arg(long, default_value = "f16")]
        gguf_dtype: meft::config::GgufDtype,
        /// A new (or empty) directory to write into.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// A past run's events as TensorBoard event files and/or a CSV of one row
    /// per step (what train.log writes as a run goes).
    ExportLogs {
        /// The run directory (holding events.jsonl).
        run_dir: std::path::PathBuf,
        /// A directory to write the TensorBoard event file into.
        #[arg(long)]
        tensorboard: Option<std::path::PathBuf>,
        /// A new CSV file to write.
        #[arg(long)]
        csv: Option<std::path::PathBuf>,
    },
    /// Every run under a directory: method, size, steps, final loss, state
    /// and metrics, one row each.
    Runs {
        /// The directory holding run directories (or one run directory).
        #[arg(default_value = "runs")]
        dir: std::path::PathBuf,
    },
    /// Run a study: a grid of real training runs (finished ones are
    /// reused), then a report of the claims they test, with a table and a
    /// plot per group: report.md, study.json, <group>.svg and .png.
    Study {
        /// The study TOML, or a folder holding study.toml (presets/study).
        study: std::path::PathBuf,
        #[command(flatten)]
        opts: meft::study_run::Options,
    },
    /// Runs side by side: a table of what each cost and scored, and their
    /// loss curves overlaid in a chart.
    Compare {
        /// The run directories to compare.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<std::path::PathBuf>,
        /// Also write the loss curves to this file (.svg or .png); repeat
        /// for both.
        #[arg(long, value_name = "FILE")]
        out: Vec<std::path::PathBuf>,
    },
}

/// The setup screen's first settings.
const STARTER: &str = include_str!("../presets/nq.toml");

fn run(cli: Cli) -> Result<()> {
    let command = cli.command.unwrap_or(Command::Tui {
        preset: None,
        out: "runs".into(),
    });
    match command {
        Command::Tui { preset, out } => {
            // Without a preset, the settings of presets/nq.toml: a first
            // run that visibly learns.
            let exp = match preset {
                Some(p) => meft::config::Experiment::load(&p)?,
                None => meft::config::Experiment::from_toml(STARTER, "presets/nq.toml")?,
            };
            std::fs::create_dir_all(&out)?;
            let _log = meft::tui::StderrToFile::open(&out.join("meft-tui.log"))?;
            meft::tui::run_app(
                exp,
                std::path::Path::new("presets"),
                &out,
                Box::new(meft::tui::launch::RunLauncher { root: out.clone() }),
                meft::tui::launch::planner_preview(out.clone()),
            )
        }
        Command::Replay { run_dir } => {
            let events = meft::tui::read_events(&run_dir)?;
            meft::tui::run_replay(events, &run_dir)
        }
        Command::Screenshot {
            run_dir,
            out,
            size,
            step,
            scale,
        } => {
            // The cheap arguments first, so a typo is not hidden behind the log.
            let size = meft::tui::parse_size(&size)?;
            let format = meft::tui::export::picture_format(&out)?;
            meft::tui::export::check_scale(scale, &format)?;
            let events = meft::tui::read_events(&run_dir)?;
            let picture = meft::tui::export::Picture { step, size, scale };
            meft::tui::screenshot(&events, &picture, &out)?;
            println!("{}", out.display());
            Ok(())
        }
        Command::Run {
            config,
            sets,
            out,
            resume,
            detach,
            into,
        } => run_headless(config, sets, out, resume, detach, into),
        Command::Attach { run_dir } => {
            anyhow::ensure!(
                meft::train::remote::is_training(&run_dir),
                "{}: no process is training this run (meft replay {} shows it)",
                run_dir.display(),
                run_dir.display()
            );
            meft::tui::run_dashboard(meft::train::remote::attach(&run_dir)?)
        }
        Command::Stop { run_dir } => meft::detach::stop(&run_dir),
        Command::Data { command } => data_command(command),
        Command::Selftest { device, json } => selftest(&device, json.as_deref()),
        Command::Bench {
            quick,
            json,
            device,
            config,
            sets,
            steps,
        } => {
            let mut progress = |what: &str| eprintln!("measuring {what}…");
            let report = match config {
                Some(config) => {
                    let exp = meft::config::Experiment::load(&config)?.apply_sets(&sets)?;
                    meft::bench::run_config(&exp, steps, &mut progress)?
                }
                None => {
                    let device = device_flag(&device)?;
                    meft::bench::run(meft::bench::Options { quick, device }, &mut progress)?
                }
            };
            print!("{}", report.table());
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report)?;
                meft::fsx::write_atomic(&path, text.as_bytes())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
            Ok(())
        }
        Command::Eval {
            run_dir,
            limit,
            sets,
            json,
        } => {
            let ev = meft::train::evaluate_run(&run_dir, limit, &sets)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ev)?);
            } else {
                println!("{} rows at step {}", ev.n, ev.step);
                for (k, v) in &ev.metrics {
                    println!("  {k:<14} {v:.4}");
                }
                for (q, p, g) in &ev.samples {
                    println!("  {q:?} → {p:?} (gold {g:?})");
                }
            }
            Ok(())
        }
        Command::Pretrain {
            from,
            entities,
            tools,
            seed,
            steps,
            lr,
            batch,
            cutoff_len,
            out,
        } => {
            use meft::train::pretrain::{experiment, export_base, PretrainOptions};
            let opts = PretrainOptions {
                from,
                entities,
                tools,
                seed,
                steps,
                lr,
                batch,
                cutoff_len,
                out,
                ..Default::default()
            };
            let exp = experiment(&opts)?;
            let dir = meft::train::new_run_dir(&opts.runs, &exp.name)?;
            let summary =
                headless::watch(meft::train::start(exp.clone(), dir.clone(), false)?, &dir)?;
            let weights = export_base(&dir, &opts.out, &exp)?;
            println!(
                "base written to {} (nq_em on its own facts: {:.3})",
                weights.display(),
                summary.metrics.get("nq_em").copied().unwrap_or(f64::NAN)
            );
            Ok(())
        }
        Command::Plan {
            config,
            sets,
            gpu_mem,
            union_fraction,
            probe,
            json,
        } => {
            let exp = meft::config::Experiment::load(&config)?.apply_sets(&sets)?;
            let gpu = gpu_mem
                .map(|g| {
                    meft::units::parse_bytes(&g).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--gpu-mem: cannot read {g:?}: expected a size like 24GiB or 512MiB"
                        )
                    })
                })
                .transpose()?;
            let observed = probe
                .map(|limit| meft::train::probe::observe(&exp, limit))
                .transpose()?;
            print!(
                "{}",
                meft::telemetry::plan::report(&exp, gpu, union_fraction, observed.as_ref(), json)?
            );
            if json {
                println!();
            }
            Ok(())
        }
        Command::Score {
            format,
            gold,
            pred,
            json,
        } => {
            let report = meft::eval::score::score(format, &gold, &pred)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Runs { dir } => {
            let records = meft::train::runs::list(&dir)?;
            if records.is_empty() {
                println!("no runs in {}", dir.display());
            } else {
                print!("{}", meft::train::runs::runs_table(&records));
            }
            Ok(())
        }
        Command::Compare { runs, out } => compare(&runs, &out),
        Command::Study { study, opts } => {
            meft::study_run::run(&study, opts)?;
            Ok(())
        }
        Command::ExportLogs {
            run_dir,
            tensorboard,
            csv,
        } => {
            for path in meft::telemetry::logs::export_logs(
                &run_dir,
                tensorboard.as_deref(),
                csv.as_deref(),
            )? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Export {
            run_dir,
            step,
            format,
            gguf_dtype,
            out,
        } => {
            println!(
                "{}",
                meft::train::export::export(&run_dir, step, format, gguf_dtype, &out)?
            );
            Ok(())
        }
        Command::Chat {
            run_dir,
            step,
            adapter,
            model,
            system,
            max_new_tokens,
            repetition_penalty,
        } => {
            let opts = GenerateOptions {
                max_new_tokens,
                beams: 1,
                repetition_penalty,
                chat: false,
            };
            anyhow::ensure!(
                repetition_penalty > 0.0,
                "--repetition-penalty: must be positive"
            );
            let src = meft::chat::Source {
                run: run_dir,
                step,
                adapter,
                model,
            };
            meft::chat::run(&src, opts, system)
        }
        Command::Generate {
            model,
            run,
            adapter,
            step,
            prompt,
            beams,
            repetition_penalty,
            max_new_tokens,
            chat,
            logits_out,
        } => {
            let opts = GenerateOptions {
                max_new_tokens,
                beams,
                repetition_penalty,
                chat,
            };
            let mut restored = match (run, adapter) {
                (Some(dir), _) => meft::train::export::restore_run(&dir, step, &[])?.into(),
                (None, Some(file)) => {
                    meft::train::export::restore_adapter(&file, model.as_deref())?.into()
                }
                (None, None) => meft::chat::Loaded::base(model.as_deref())?,
            };
            let r = &mut restored;
            if let Some(path) = &logits_out {
                let ids = meft::model::generate::prompt_ids(&r.tokenizer, &prompt, opts.chat)?;
                let logits = meft::model::generate::last_logits(&r.model, &mut r.method, &ids)?;
                let json = serde_json::json!({"ids": ids, "logits": logits});
                meft::fsx::write_atomic(path, json.to_string().as_bytes())
                    .map_err(|e| anyhow::anyhow!("--logits-out: {}: {e}", path.display()))?;
            }
            let text = meft::model::generate::complete_with(
                &r.model,
                &r.tokenizer,
                &mut r.method,
                &prompt,
                &opts,
            )?;
            println!("{text}");
            Ok(())
        }
    }
}

/// The compute device `--device` names; errors name the flag.
fn device_flag(spec: &str) -> Result<meft::model::Device> {
    meft::model::load::device_of(spec).map_err(|e| {
        let msg = e.to_string();
        let why = msg.strip_prefix("model.device: ").unwrap_or(&msg);
        anyhow::anyhow!("--device: {why}")
    })
}

/// `meft selftest`: one line per check as it is made, the JSON when asked,
/// and an error (exit status 1) when any check failed.
fn selftest(device: &str, json: Option<&std::path::Path>) -> Result<()> {
    let device = device_flag(device)?;
    let report = meft::selftest::run(&device, &mut |check| println!("{}", check.line()))?;
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        meft::fsx::write_atomic(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if !report.ok {
        return Err(meft::selftest::Failed {
            failed: report.failed(),
            total: report.checks.len(),
            device: report.device,
        }
        .into());
    }
    Ok(())
}

fn run_headless(
    config: Option<std::path::PathBuf>,
    sets: Vec<String>,
    out: std::path::PathBuf,
    resume: Option<std::path::PathBuf>,
    detach: bool,
    into: Option<std::path::PathBuf>,
) -> Result<()> {
    use meft::config::Experiment;
    let (exp, dir, resuming) = match (resume, config, into) {
        (Some(dir), _, _) => {
            let exp = Experiment::load(&dir.join("config.toml"))?.apply_sets(&sets)?;
            (exp, dir, true)
        }
        (None, _, Some(dir)) => {
            let exp = Experiment::load(&dir.join("config.toml"))?.apply_sets(&sets)?;
            (exp, dir, false)
        }
        (None, Some(path), None) => {
            let exp = Experiment::load(&path)?.apply_sets(&sets)?;
            exp.validate()?;
            let dir = meft::train::new_run_dir(&out, &exp.name)?;
            (exp, dir, false)
        }
        (None, None, None) => anyhow::bail!("run: give a config file or --resume RUN_DIR"),
    };
    exp.validate()?;
    if resuming {
        if let meft::train::ResumePoint::Finished(step) = meft::train::resume_point(&dir, &exp)? {
            println!(
                "{}: the run finished at step {step}; nothing to resume (to train further: meft run --resume {} --set train.steps=N)",
                dir.display(),
                dir.display()
            );
            return Ok(());
        }
        if !sets.is_empty() {
            exp.save(&dir.join("config.toml"))?;
        }
    }
    if detach {
        if !resuming {
            exp.save(&dir.join("config.toml"))?;
        }
        let started = meft::detach::spawn(&dir, resuming);
        if started.is_err() && !resuming {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let pid = started?;
        println!("{}", dir.display());
        eprintln!(
            "training in process {pid}, its output in {}: `meft attach {}` watches it, `meft stop {}` stops it",
            dir.join(meft::detach::LOG).display(),
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    headless::run(exp, &dir, resuming)?;
    Ok(())
}

/// `meft compare`: the table, then the loss curves to each `--out` file.
fn compare(dirs: &[std::path::PathBuf], outs: &[std::path::PathBuf]) -> Result<()> {
    use meft::train::runs::{compare_table, RunRecord};
    for out in outs {
        meft::plot::format_of(out)?;
    }
    let mut records = Vec::new();
    for dir in dirs {
        let r = RunRecord::read(dir);
        if let Some(problem) = &r.problem {
            anyhow::bail!("{problem}");
        }
        records.push(r);
    }
    print!("{}", compare_table(&records));
    let chart = meft::plot::Chart {
        title: "Training loss".into(),
        x_title: "step".into(),
        y_title: "loss".into(),
        series: records
            .iter()
            .map(|r| meft::plot::Series {
                label: match &r.info {
                    Some(i) => format!("{} · {}", r.name, i.adapter),
                    None => r.name.clone(),
                },
                points: r.losses.iter().map(|&(s, l)| (s as f64, l)).collect(),
            })
            .collect(),
        ..Default::default()
    };
    for out in outs {
        chart.write(out)?;
        println!("{}", out.display());
    }
    Ok(())
}

fn data_command(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Synth {
            task,
            entities,
            seed,
            pool,
            namespace,
            unanswerable,
            out,
        } => {
            let spec = meft::data::synth::WorldSpec {
                entities,
                seed,
                pool,
                namespace,
                unanswerable,
                ..Default::default()
            };
            let report = meft::data::synth::write(task, &spec, &out)?;
            println!("{report}");
        }
        DataCommand::Check {
            format,
            file,
            config,
            model,
            template,
            cutoff_len,
            columns,
        } => {
            let mut exp = match &config {
                Some(path) => meft::config::Experiment::load(path)?,
                None => meft::config::Experiment::default(),
            };
            exp.data.task = format;
            let mut sets: Vec<String> = columns
                .iter()
                .map(|c| match c.split_once('=') {
                    Some((k, v)) => Ok(format!("data.columns.{}={v:?}", k.trim())),
                    None => anyhow::bail!("--column: expected KEY=NAME, got {c:?}"),
                })
                .collect::<Result<_>>()?;
            sets.extend(model.map(|m| format!("model.reference={m:?}")));
            sets.extend(template.map(|t| format!("data.template={:?}", t.name())));
            sets.extend(cutoff_len.map(|c| format!("train.cutoff_len={c}")));
            let exp = exp.apply_sets(&sets)?;
            exp.validate()?;
            let report = meft::data::check_with(format, &file, &exp.data.columns)?;
            println!("{report}");
            let tokenizer = meft::train::load_base(&exp)?.tokenizer;
            let tokens = meft::data::inspect::token_report(&exp, &file, &tokenizer)?;
            println!("{tokens}");
        }
    }
    Ok(())
}

fn main() {
    // Output piped into `head` and closed early ends the process quietly,
    // as other command-line tools do, instead of a panic in println!.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    meft::telemetry::heap::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        if let Some(headless::Interrupted(sig)) = e.downcast_ref::<headless::Interrupted>() {
            std::process::exit(128 + sig);
        }
        eprintln!("meft: {}", meft::fsx::error_line(&e));
        // A diverged run or a failed check is an outcome, not bad input.
        let code = if e.downcast_ref::<meft::train::Diverged>().is_some()
            || e.downcast_ref::<meft::selftest::Failed>().is_some()
        {
            1
        } else {
            2
        };
        std::process::exit(code);
    }
}
