//! While the TUI owns the terminal, anything a library writes to stderr
//! goes to a log file instead of over the screen.

use anyhow::{Context, Result};

/// Stderr redirected to a file; dropping this puts stderr back.
pub struct StderrToFile {
    #[cfg(unix)]
    saved: i32,
}

impl StderrToFile {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("{}: cannot open the log", path.display()))?;
            // SAFETY: plain descriptor duplication; `file` outlives the dup2.
            let saved = unsafe { libc::dup(2) };
            unsafe { libc::dup2(file.as_raw_fd(), 2) };
            Ok(Self { saved })
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(Self {})
        }
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.saved >= 0 {
            // SAFETY: restores the descriptor saved in `open`.
            unsafe {
                libc::dup2(self.saved, 2);
                libc::close(self.saved);
            }
        }
    }
}
