//! The restart record: what lets a restarted daemon be ready before it has
//! read its file's block list.
//!
//! After each change it enforces, the daemon notes in its runtime directory
//! (`$RUNTIME_DIRECTORY`, which systemd's `RuntimeDirectory=` sets; no
//! record is kept without it) which versions of the file and its fragments
//! it applied, where the file's block list lies, and the digest of the state
//! that left in the maps. A daemon started on the same versions (same inode,
//! size, times) reads the file but for that list, and adopts the pinned
//! filter if its maps hold that digest: ready in a few milliseconds however
//! long the list. It then reads the whole file and verifies the maps
//! against it, as after any adoption on the record. Anything that does not
//! match (another version, another digest, a record that is missing or
//! unreadable) is a start that reads the whole file first.

use std::ffi::OsString;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::watch::Stamp;

/// The first line of a record, with its format's version.
const HEADER: &str = "icmpguard restart record 1";

/// What a daemon notes of the state it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The versions of the file and its fragments that were applied
    /// ([`files`]).
    pub files: u64,
    /// The bytes between the brackets of the file's block list.
    pub cut: Range<usize>,
    /// The digest of the state applied (the meta map's).
    pub digest: u64,
}

/// The runtime directory, if the daemon has one.
pub fn dir() -> Option<PathBuf> {
    let v = std::env::var_os("RUNTIME_DIRECTORY")?;
    // systemd lists several, separated by colons, when the unit asks for
    // several; the first is this one's.
    let first = v.to_str().map_or(v.clone(), |s| OsString::from(s.split(':').next().unwrap_or_default()));
    let p = PathBuf::from(first);
    p.is_absolute().then_some(p)
}

/// One number for the versions of `config` (its `stamp`) and of its
/// fragments: equal numbers, the same files. `None` when the file is gone.
pub fn files(config: &Path, stamp: Option<Stamp>, fragments: &[(OsString, Option<Stamp>)]) -> Option<u64> {
    let stamp = stamp?;
    Some(fnv(format!("{:?}\n{stamp:?}\n{fragments:?}", absolute(config)).as_bytes()))
}

/// The record of `config`, if there is one and it can be read.
pub fn read(config: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(file(config)?).ok()?;
    parse(&text, config)
}

/// Writes the record of `config` (atomically: a reader sees the old one or
/// the new one). Without a runtime directory, nothing.
pub fn write(config: &Path, record: &Record) -> std::io::Result<()> {
    let Some(path) = file(config) else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(render(record, config).as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// Removes the record of `config`: what is pinned is not what it says.
pub fn remove(config: &Path) {
    if let Some(path) = file(config) {
        let _ = std::fs::remove_file(path);
    }
}

/// Where the record of `config` is: one file per configuration file, named
/// after its absolute path.
fn file(config: &Path) -> Option<PathBuf> {
    let name = format!("restart-{:016x}", fnv(absolute(config).as_os_str().as_encoded_bytes()));
    Some(dir()?.join(name))
}

fn absolute(config: &Path) -> PathBuf {
    std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf())
}

fn render(r: &Record, config: &Path) -> String {
    format!(
        "{HEADER}\nconfig {:?}\nfiles {:016x}\nblock {} {}\ndigest {:016x}\n",
        absolute(config),
        r.files,
        r.cut.start,
        r.cut.end,
        r.digest
    )
}

/// The record in `text`, if it is one, of `config`.
fn parse(text: &str, config: &Path) -> Option<Record> {
    let mut lines = text.lines();
    if lines.next()? != HEADER || lines.next()? != format!("config {:?}", absolute(config)) {
        return None;
    }
    let mut value = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(str::to_string);
    let files = u64::from_str_radix(&value("files")?, 16).ok()?;
    let block = value("block")?;
    let (start, end) = block.split_once(' ')?;
    let digest = u64::from_str_radix(&value("digest")?, 16).ok()?;
    if lines.next().is_some() {
        return None;
    }
    let cut = start.parse().ok()?..end.parse().ok()?;
    Some(Record { files, cut, digest })
}

/// FNV-1a: the same number for the same bytes, in every build.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_only_for_its_file() {
        let r = Record { files: 0x0123_4567_89ab_cdef, cut: 17..17_000_017, digest: 0xfedc_ba98_7654_3210 };
        let config = Path::new("/etc/icmpguard.toml");
        let text = render(&r, config);
        assert_eq!(parse(&text, config), Some(r.clone()));
        assert_eq!(parse(&text, Path::new("/etc/other.toml")), None);
        // Cut short, a line too many, another version: not a record.
        for bad in [
            text.lines().take(4).collect::<Vec<_>>().join("\n"),
            format!("{text}extra\n"),
            text.replace(HEADER, "icmpguard restart record 0"),
            text.replace("block 17 ", "block x "),
        ] {
            assert_eq!(parse(&bad, config), None, "{bad}");
        }
    }

    #[test]
    fn another_version_of_a_file_or_of_a_fragment_is_other_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "interfaces = []\n").expect("write");
        let stamp = Stamp::of(&path);
        let none: Vec<(OsString, Option<Stamp>)> = Vec::new();
        let before = files(&path, stamp, &none);
        assert!(before.is_some());
        assert_eq!(files(&path, Stamp::of(&path), &none), before);
        // A save by rename: another inode.
        let new = dir.path().join("c.new");
        std::fs::write(&new, "interfaces = []\n").expect("write");
        std::fs::rename(&new, &path).expect("rename");
        assert_ne!(files(&path, Stamp::of(&path), &none), before);
        let fragment = vec![(OsString::from("feed.toml"), stamp)];
        assert_ne!(files(&path, stamp, &fragment), before);
        assert_eq!(files(&path, None, &none), None);
    }
}
