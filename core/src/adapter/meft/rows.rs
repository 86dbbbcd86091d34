//! A store's key or value rows: owned by the process while it trains, or
//! mapped from a checkpoint's file when it only decodes, so a paper-size
//! adapter chats without a second copy of its rows in memory. A mapping is
//! private: the file is never written through it, and the few rows that
//! would change (none while decoding) get pages of their own.

use std::path::Path;

pub enum HostRows {
    Owned(Vec<f32>),
    Mapped(Mapped),
}

/// An f32 tensor's bytes in a private (copy-on-write) mapping of its file.
pub struct Mapped {
    map: memmap2::MmapMut,
    /// Where the tensor starts in the mapping (the file's offset rounded
    /// down to a page).
    skip: usize,
    len: usize,
}

impl HostRows {
    /// `len` f32 values at byte `offset` of `path`, mapped when the offset
    /// allows f32 access and read into memory otherwise.
    pub fn map(path: &Path, offset: u64, len: usize) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let bytes = len
            .checked_mul(4)
            .ok_or_else(|| std::io::Error::other("tensor too large"))?;
        let have = file.metadata()?.len();
        if offset
            .checked_add(bytes as u64)
            .is_none_or(|end| end > have)
        {
            return Err(std::io::Error::other(format!(
                "{bytes} bytes at {offset} run past the file's {have}"
            )));
        }
        if !offset.is_multiple_of(4) || cfg!(target_endian = "big") {
            use std::io::{Read, Seek};
            let mut f = file;
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut raw = vec![0u8; bytes];
            f.read_exact(&mut raw)?;
            let v = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(Self::Owned(v));
        }
        let page = page_size() as u64;
        let start = offset - offset % page;
        let skip = (offset - start) as usize;
        // SAFETY: the mapping is private (copy-on-write), so nothing this
        // process does reaches the file; meft writes checkpoints and
        // exports under a temporary name and renames them into place, so
        // the file is not changed underneath the mapping by meft itself.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(skip + bytes)
                .map_copy(&file)?
        };
        Ok(Self::Mapped(Mapped { map, skip, len }))
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped(_))
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

impl From<Vec<f32>> for HostRows {
    fn from(v: Vec<f32>) -> Self {
        Self::Owned(v)
    }
}

impl std::ops::Deref for HostRows {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => {
                let bytes = &m.map[m.skip..m.skip + 4 * m.len];
                // SAFETY: the bytes are `len` f32 values (little-endian,
                // checked at mapping) starting at a 4-byte-aligned address
                // (a page boundary plus a multiple of 4), borrowed for as
                // long as the mapping lives; every bit pattern is an f32.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), m.len) }
            }
        }
    }
}

impl std::ops::DerefMut for HostRows {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => {
                let bytes = &mut m.map[m.skip..m.skip + 4 * m.len];
                // SAFETY: as for Deref, borrowed mutably through the
                // mapping's own exclusive borrow; writes stay private.
                unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<f32>(), m.len) }
            }
        }
    }
}

/// A copy in memory, however the original is held.
impl Clone for HostRows {
    fn clone(&self) -> Self {
        Self::Owned(self.to_vec())
    }
}

impl PartialEq<Vec<f32>> for HostRows {
    fn eq(&self, other: &Vec<f32>) -> bool {
        self[..] == other[..]
    }
}

/// Equal values, however held.
impl PartialEq for HostRows {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for HostRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.is_mapped() { "mapped" } else { "owned" };
        write!(f, "HostRows({} values, {how})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_rows_read_the_file_and_writes_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.bin");
        let mut bytes = vec![0u8; 8];
        for x in [1.5f32, -2.0, 3.25] {
            bytes.extend(x.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut rows = HostRows::map(&path, 8, 3).unwrap();
        assert!(rows.is_mapped());
        assert_eq!(&rows[..], &[1.5, -2.0, 3.25]);
        rows[1] = 7.0;
        assert_eq!(&rows[..], &[1.5, 7.0, 3.25]);
        drop(rows);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Unaligned: read into memory instead.
        let rows = HostRows::map(&path, 6, 1).unwrap();
        assert!(!rows.is_mapped());
        assert_eq!(rows[0], 0.0);
        assert!(HostRows::map(&path, 12, 3).is_err());
    }
}
