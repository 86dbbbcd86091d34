//! `meft chat`: talk to a run's model with its trained adapter, at the
//! terminal or through a pipe. The reply is written as it is decoded;
//! `/reset` forgets the turns, `/system TEXT` sets the system prompt,
//! Ctrl-D (end of input) leaves.

use crate::config::Template;
use crate::model::converse::Conversation;
use crate::model::generate::GenerateOptions;
use crate::train::export::Restored;
use crate::train::method::Method;
use anyhow::Result;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// What to chat with.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A run directory: its base, its adapter from a checkpoint, its template.
    pub run: Option<PathBuf>,
    /// With `run`: the checkpoint of this step (default: the newest).
    pub step: Option<u64>,
    /// A `meft export --format meft` adapter, on `model` or its own base.
    pub adapter: Option<PathBuf>,
    /// A base model alone, or the base for `adapter`.
    pub model: Option<String>,
}

/// A model ready to talk: its weights, its adapter and the template its run
/// trained with.
pub struct Loaded {
    pub model: crate::model::Model,
    pub tokenizer: crate::model::Tokenizer,
    pub method: Method,
    pub template: Template,
    /// One line saying what was loaded.
    pub what: String,
}

impl From<Restored> for Loaded {
    fn from(r: Restored) -> Self {
        Self {
            what: format!(
                "{} at step {} ({} on {})",
                r.checkpoint.display(),
                r.step,
                r.exp.method.kind,
                r.exp.model.reference
            ),
            template: r.exp.data.template,
            model: r.model,
            tokenizer: r.tokenizer,
            method: r.method,
        }
    }
}

impl Loaded {
    /// A base alone (embedded:tiny when None), under its own chat template
    /// when it has one.
    pub fn base(reference: Option<&str>) -> Result<Self> {
        let reference = reference.unwrap_or("embedded:tiny");
        let parsed = crate::model::ModelRef::parse(reference)?;
        let loaded = crate::model::load_model(&parsed, &crate::model::Device::Cpu)?;
        let template = if loaded.tokenizer.chat_template.is_some() {
            Template::Model
        } else {
            Template::Plain
        };
        Ok(Self {
            model: loaded.model,
            tokenizer: loaded.tokenizer,
            method: Method::None,
            template,
            what: format!("{reference} (the base alone)"),
        })
    }
}

pub fn load(src: &Source) -> Result<Loaded> {
    use crate::train::export::{restore_adapter, restore_run};
    Ok(match (&src.run, &src.adapter) {
        (Some(dir), _) => restore_run(dir, src.step, &[])?.into(),
        (None, Some(file)) => restore_adapter(file, src.model.as_deref())?.into(),
        (None, None) => Loaded::base(src.model.as_deref())?,
    })
}

const HELP: &str = "/reset forgets the conversation, /system TEXT sets the system prompt (/system alone clears it), /help shows this, Ctrl-D leaves";

/// The conversation loop: one message per line from `input`, each reply
/// written to `out` as it is decoded. `interactive` shows a prompt before
/// each line. Returns at the end of `input` or on `/quit`.
pub fn repl(
    conv: &mut Conversation,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    interactive: bool,
) -> Result<()> {
    let mut line = String::new();
    loop {
        if interactive {
            write!(out, "you> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            if interactive {
                writeln!(out)?;
            }
            return Ok(());
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        match word {
            "/quit" | "/exit" => return Ok(()),
            "/reset" => {
                conv.reset();
                writeln!(out, "(the conversation starts again)")?;
            }
            "/system" => {
                conv.set_system(Some(rest.trim().to_string()));
                match conv.system() {
                    Some(_) if !conv.keeps_turns() => writeln!(
                        out,
                        "(set, but template {} asks each message alone and has no system prompt)",
                        conv.template()
                    )?,
                    Some(_) => writeln!(out, "(system prompt set)")?,
                    None => writeln!(out, "(system prompt cleared)")?,
                }
            }
            "/help" => writeln!(out, "{HELP}")?,
            w if w.starts_with('/') && !w.contains(char::is_whitespace) && w.len() > 1 => {
                writeln!(out, "(no command {w}; {HELP})")?
            }
            _ => {
                if interactive {
                    write!(out, "meft> ")?;
                }
                let mut failed = None;
                let said = conv.say(text, &mut |piece| {
                    if failed.is_none() {
                        failed = out
                            .write_all(piece.as_bytes())
                            .and_then(|_| out.flush())
                            .err();
                    }
                });
                if let Some(e) = failed {
                    return Err(e.into());
                }
                match said {
                    Ok(_) => writeln!(out)?,
                    // A message too long for the context is said and the
                    // conversation goes on.
                    Err(e) => writeln!(out, "(meft: {})", crate::fsx::error_line(&e))?,
                }
                out.flush()?;
            }
        }
    }
}

/// `meft chat`: load `src`, say what was loaded and how to leave on stderr,
/// and talk over stdin and stdout.
pub fn run(src: &Source, opts: GenerateOptions, system: Option<String>) -> Result<()> {
    talk(load(src)?, opts, system, &mut std::io::stderr())
}

/// The conversation over stdin and stdout, what was loaded said to `said`.
fn talk(
    mut loaded: Loaded,
    opts: GenerateOptions,
    system: Option<String>,
    said: &mut dyn Write,
) -> Result<()> {
    use std::io::IsTerminal;
    let interactive = std::io::stdin().is_terminal();
    let mut conv = Conversation::new(
        &loaded.model,
        &loaded.tokenizer,
        &mut loaded.method,
        loaded.template,
        opts,
    )?;
    conv.set_system(system);
    writeln!(
        said,
        "chatting with {}; template {}{}",
        loaded.what,
        loaded.template,
        if conv.keeps_turns() {
            ""
        } else {
            " (each message asked alone)"
        }
    )?;
    if interactive {
        writeln!(said, "{HELP}")?;
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    repl(
        &mut conv,
        &mut stdin.lock(),
        &mut stdout.lock(),
        interactive,
    )
}

/// The chat the TUI's runs screen opens (`c`): the run at its newest
/// checkpoint, on the terminal the TUI handed over, until Ctrl-D. (The
/// TUI keeps stderr for its log, so everything is said on stdout.)
pub fn at_terminal(run_dir: &std::path::Path) -> Result<()> {
    println!("loading {} …", run_dir.display());
    let src = Source {
        run: Some(run_dir.to_path_buf()),
        ..Source::default()
    };
    let loaded = load(&src)?;
    let opts = GenerateOptions {
        max_new_tokens: 256,
        ..GenerateOptions::default()
    };
    talk(loaded, opts, None, &mut std::io::stdout())?;
    println!("back to meft …");
    Ok(())
}
