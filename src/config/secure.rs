//! Reading the configuration file securely: ownership and permissions of
//! the file, its directory and every symlink on the way, checked as sshd's
//! StrictModes does; and the one lenient reading, of `pin_dir` alone.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Strictness;
use crate::diagnostic::Diagnostic;
use crate::error::Error;

/// Reads the file, checking ownership and permissions on the open file (not
/// the path, which could change in between) as sshd's StrictModes does.
pub(super) fn read_secure(path: &Path, strictness: Strictness, warnings: &mut Vec<String>) -> Result<String, Error> {
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    let (mut file, meta) = open_secure(path, strictness, warnings)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(io)?;
    utf8(path, bytes)
}

/// The file at `path` but for the bytes of `cut`, which lie between a `[`
/// and a `]` (checked): the text with that array emptied. The file obeys
/// the rules [`read_secure`] enforces; the bytes in `cut` are not read.
/// `None` when the file is shorter or the brackets are not there.
pub(super) fn read_around(path: &Path, cut: std::ops::Range<usize>) -> Result<Option<String>, Error> {
    use std::os::unix::fs::FileExt;
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    let (file, meta) = open_secure(path, Strictness::Enforce, &mut Vec::new())?;
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if cut.start == 0 || cut.start > cut.end || cut.end >= len {
        return Ok(None);
    }
    let mut bytes = vec![0; cut.start + (len - cut.end)];
    let (head, tail) = bytes.split_at_mut(cut.start);
    file.read_exact_at(head, 0).map_err(io)?;
    file.read_exact_at(tail, cut.end as u64).map_err(io)?;
    if head.last() != Some(&b'[') || tail.first() != Some(&b']') {
        return Ok(None);
    }
    utf8(path, bytes).map(Some)
}

/// Opens `path` for reading once it is found to be a regular file that
/// only root can change (refused with `Enforce`, a warning with `Warn`).
fn open_secure(
    path: &Path,
    strictness: Strictness,
    warnings: &mut Vec<String>,
) -> Result<(std::fs::File, std::fs::Metadata), Error> {
    let io = |source: std::io::Error| Error::Io { path: path.to_path_buf(), source };
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below.
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a directory" } else { "not a regular file" };
        return Err(Error::NotAFile { path: path.to_path_buf(), kind });
    }
    let mut problems = Vec::new();
    if let Some(p) = ownership_problem(&meta) {
        problems.push((path.to_path_buf(), p));
    }
    symlink_problems(path, &mut problems);
    let real = std::fs::canonicalize(path).map_err(io)?;
    if let Some(dir) = real.parent() {
        let dmeta = std::fs::metadata(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        if let Some(p) = ownership_problem(&dmeta) {
            problems.push((dir.to_path_buf(), p));
        }
    }
    problems.dedup();
    for (p, reason) in problems {
        match strictness {
            Strictness::Enforce => return Err(Error::Unsafe { path: p, reason }),
            Strictness::Warn => warnings.push(format!("{}: {reason}; `icmpguard run` would refuse it", p.display())),
        }
    }
    Ok((file, meta))
}

/// `bytes` as text, or where they stop being UTF-8.
fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, Error> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(bytes);
            // The lossy text has the same prefix up to `at`.
            Err(Error::Config {
                diagnostics: vec![Diagnostic::at(
                    path,
                    &text,
                    at..at + 1,
                    "invalid UTF-8; the file must be UTF-8 text",
                )],
            })
        }
    }
}

/// The fragments in `dir`, in name order; none when it does not exist.
/// The directory obeys the main file's rules (owned by root, not group-
/// or world-writable).
pub(super) fn fragment_files(
    dir: &Path,
    strictness: Strictness,
    warnings: &mut Vec<String>,
) -> Result<Vec<PathBuf>, Error> {
    let io = |source: std::io::Error| Error::Io { path: dir.to_path_buf(), source };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    if !meta.is_dir() {
        return Err(Error::NotAFile { path: dir.to_path_buf(), kind: "not a directory (fragments go in a directory)" });
    }
    if let Some(reason) = ownership_problem(&meta) {
        // Named as read_secure names a fragment's directory.
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        match strictness {
            Strictness::Enforce => return Err(Error::Unsafe { path: dir, reason }),
            Strictness::Warn => warnings.push(format!("{}: {reason}; `icmpguard run` would refuse it", dir.display())),
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if super::is_fragment_name(&entry.file_name()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Problems of the symlinks on the way from `path` to the file: a link
/// owned by someone other than root, or in a directory someone other than
/// root can write (who could replace the link and so the configuration).
fn symlink_problems(path: &Path, problems: &mut Vec<(PathBuf, String)>) {
    let mut hop = path.to_path_buf();
    for _ in 0..16 {
        let Ok(meta) = std::fs::symlink_metadata(&hop) else { return };
        if !meta.file_type().is_symlink() {
            return;
        }
        if meta.uid() != 0 {
            problems.push((hop.clone(), format!("is a symlink owned by uid {}, not root", meta.uid())));
        }
        let dir = match hop.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(dmeta) = std::fs::metadata(&dir) {
            if let Some(p) = ownership_problem(&dmeta) {
                problems.push((dir.clone(), format!("holds the symlink {} and {p}", hop.display())));
            }
        }
        let Ok(target) = std::fs::read_link(&hop) else { return };
        hop = dir.join(target);
    }
}

/// Why a file or directory could be changed by someone other than root.
fn ownership_problem(meta: &std::fs::Metadata) -> Option<String> {
    if meta.uid() != 0 {
        return Some(format!("is owned by uid {}, not root; run `chown root:root` on it", meta.uid()));
    }
    let mode = meta.mode();
    // A sticky, world-writable directory (like /tmp) still lets others
    // create the file first: no exception for it.
    if mode & 0o022 != 0 {
        return Some(format!("is group- or world-writable (mode {:04o}); run `chmod go-w` on it", mode & 0o7777));
    }
    None
}

/// The `pin_dir` a file names, read leniently (neither its owner nor the
/// rest of the file checked): for `status` and `unload` when the file is
/// otherwise invalid, since they must still find the filter.
pub fn pin_dir_hint(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc = toml::de::DeTable::parse(&text).ok()?;
    super::schema::pin_dir(doc.get_ref().get("pin_dir")?.get_ref().as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_dir_hint_reads_an_otherwise_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let hint = |text: &str| {
            std::fs::write(&file, text).unwrap();
            pin_dir_hint(&file)
        };
        assert_eq!(hint("blok = 1\npin_dir = \"/sys/fs/bpf/x\"\n"), Some(PathBuf::from("/sys/fs/bpf/x")));
        assert_eq!(hint("interfaces = []\nblock = []\n"), None);
        assert_eq!(hint("pin_dir = \"relative\"\n"), None, "a pin_dir the file may not name");
        assert_eq!(hint("pin_dir = \"/sys/fs/bpf/x\"\n[\n"), None, "not TOML");
    }
}
