//! Noticing that the configuration file was saved.
//!
//! Editors and configuration management save in different ways: writing in
//! place (vim with `backupcopy=yes`, `>`), writing a new file and renaming
//! it over the old one (`sed -i`, `mv`, Ansible, vim with `backupcopy=no`),
//! sometimes removing the old file first. The parent directory is watched
//! (not the file, whose inode a rename replaces) and events are filtered on
//! the file's name; a burst of events becomes one reload ([`Debounce`]):
//! at once when the save is visibly complete (the file renamed into place,
//! or closed after writing), after a quiet moment otherwise. A stat of the
//! file on the daemon's timer backs inotify up (a lost event, a replaced
//! directory).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Watches the directories that hold the configuration file, and its
/// fragment directory (`icmpguard.d`).
pub struct Watch {
    watcher: RecommendedWatcher,
    fragments: PathBuf,
    /// Whether the fragment directory is watched (it may appear later).
    fragments_watched: bool,
    /// Readable when something happened to the file.
    pub wake: UnixStream,
}

/// What an event on the file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// Nothing about the content (a read, the daemon's own among them).
    None,
    /// The content is changing: more may follow.
    Ongoing,
    /// A save just completed: the file was closed after writing, or a new
    /// file was renamed into its place.
    Complete,
}

fn change(kind: &EventKind, is_destination: bool) -> Change {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Complete,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Change::Complete,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if is_destination => Change::Complete,
        k if relevant(k) => Change::Ongoing,
        _ => Change::None,
    }
}

/// Whether an event may mean new content: creation, modification, removal,
/// renames, and a writer closing the file. Reads (the daemon's own among
/// them) are not.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Other => false,
    }
}

/// The file and, if it is a symlink, its target: both names and both
/// directories matter.
fn watched(config: &Path) -> Vec<(PathBuf, OsString)> {
    let mut out = Vec::new();
    for p in [Some(config.to_path_buf()), std::fs::canonicalize(config).ok()].into_iter().flatten() {
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let entry = (dir.to_path_buf(), name.to_os_string());
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

impl Watch {
    pub fn new(config: &Path) -> Result<Watch, String> {
        let (wake, writer) = UnixStream::pair().map_err(|e| format!("creating a wakeup pipe: {e}"))?;
        wake.set_nonblocking(true).map_err(|e| e.to_string())?;
        writer.set_nonblocking(true).map_err(|e| e.to_string())?;
        let targets = watched(config);
        let mut names: Vec<OsString> = targets.iter().map(|(_, n)| n.clone()).collect();
        // The fragment directory itself appearing, going or renamed.
        names.push(OsString::from(crate::config::FRAGMENT_DIR));
        let fragments = crate::config::fragment_dir(config);
        let in_fragments = fragments.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let ours = |p: &PathBuf| {
                let Some(n) = p.file_name() else { return false };
                names.iter().any(|w| w == n)
                    || (p.parent() == Some(in_fragments.as_path()) && crate::config::is_fragment_name(n))
            };
            let what = match res {
                Ok(ev) if ev.paths.iter().any(ours) => change(&ev.kind, ev.paths.last().is_some_and(ours)),
                Ok(_) => Change::None,
                // Overflow or a watch error: look at the file to be sure.
                Err(_) => Change::Ongoing,
            };
            // A full pipe already means "look at the file".
            match what {
                Change::None => {}
                Change::Ongoing => drop((&writer).write(&[1])),
                Change::Complete => drop((&writer).write(&[2])),
            }
        })
        .map_err(|e| format!("starting inotify: {e}"))?;
        let mut dirs: Vec<&PathBuf> = targets.iter().map(|(d, _)| d).collect();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive).map_err(|e| format!("watching {}: {e}", dir.display()))?;
        }
        let mut w = Watch { watcher, fragments, fragments_watched: false, wake };
        w.refresh();
        Ok(w)
    }

    /// Watches the fragment directory if it exists now and is not watched
    /// yet (created after the start); forgets it once it is gone. Between
    /// the two, the daemon's once-a-second look at the fragments notices.
    pub fn refresh(&mut self) {
        let exists = self.fragments.is_dir();
        if exists && !self.fragments_watched {
            self.fragments_watched = self.watcher.watch(&self.fragments, RecursiveMode::NonRecursive).is_ok();
        } else if !exists && self.fragments_watched {
            let _ = self.watcher.unwatch(&self.fragments);
            self.fragments_watched = false;
        }
    }

    /// Empties the wakeup pipe and tells `debounce` what it held.
    pub fn drain_into(&mut self, debounce: &mut Debounce, now: Instant) {
        let mut buf = [0u8; 256];
        while let Ok(n) = self.wake.read(&mut buf) {
            if n == 0 {
                break;
            }
            for b in &buf[..n] {
                match b {
                    2 => debounce.complete(now),
                    _ => debounce.event(now),
                }
            }
        }
    }
}

/// What identifies one version of the file: a rename changes the inode, a
/// write the size or the times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    /// The fragments of a directory (config::is_fragment_name) by name,
    /// sorted, each with its version; empty when there is no directory.
    pub fn of_dir(dir: &Path) -> Vec<(OsString, Option<Stamp>)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut out: Vec<(OsString, Option<Stamp>)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| crate::config::is_fragment_name(&e.file_name()))
            .map(|e| (e.file_name(), Stamp::of(&e.path())))
            .collect();
        out.sort();
        out
    }

    /// `None` when the file is missing or unreadable.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        })
    }
}

/// Turns a burst of events into one reload: due `SETTLE` after a save
/// completed, or once the file has been quiet for `QUIET` after other
/// changes, and at the latest `MAX_DELAY` after the first event of a burst
/// that does not stop (so a change is applied within a second whatever
/// happens).
#[derive(Debug, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
    /// The last event was a completed save.
    complete: bool,
}

pub const SETTLE: Duration = Duration::from_millis(10);
pub const QUIET: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_millis(500);

impl Debounce {
    /// The file is changing.
    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.complete = false;
    }

    /// A save completed (closed after writing, renamed into place).
    pub fn complete(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.complete = true;
    }

    pub fn pending(&self) -> bool {
        self.first.is_some()
    }

    /// When the reload is due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        let wait = if self.complete { SETTLE } else { QUIET };
        Some((last + wait).min(first + MAX_DELAY))
    }

    /// Whether the reload is due now; if so, the burst is over.
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                *self = Debounce::default();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_reload_after_it_goes_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert!(!d.pending());
        d.event(t0);
        d.event(t0 + Duration::from_millis(30));
        d.event(t0 + Duration::from_millis(60));
        assert!(!d.take_due(t0 + Duration::from_millis(120)));
        assert!(d.take_due(t0 + Duration::from_millis(160)));
        assert!(!d.pending());
        assert!(!d.take_due(t0 + Duration::from_millis(400)));
    }

    #[test]
    fn a_burst_that_never_stops_is_still_applied_in_time() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        let mut t = t0;
        let mut fired = None;
        while t < t0 + Duration::from_secs(2) {
            d.event(t);
            t += Duration::from_millis(50);
            if d.take_due(t) {
                fired = Some(t);
                break;
            }
        }
        assert!(fired.is_some_and(|f| f - t0 <= MAX_DELAY + Duration::from_millis(50)), "{fired:?}");
    }

    #[test]
    fn a_completed_save_is_due_at_once_an_ongoing_one_after_a_quiet_moment() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.event(t0);
        d.complete(t0 + Duration::from_millis(1));
        assert!(d.take_due(t0 + Duration::from_millis(12)));
        d.complete(t0);
        d.event(t0 + Duration::from_millis(2));
        assert!(!d.take_due(t0 + Duration::from_millis(50)), "more writes followed the close");
        assert!(d.take_due(t0 + Duration::from_millis(103)));
    }

    #[test]
    fn renames_into_place_and_closes_after_writing_complete_a_save() {
        use notify::event::CreateKind;
        assert_eq!(change(&EventKind::Access(AccessKind::Close(AccessMode::Write)), true), Change::Complete);
        assert_eq!(change(&EventKind::Modify(ModifyKind::Name(RenameMode::To)), true), Change::Complete);
        assert_eq!(change(&EventKind::Modify(ModifyKind::Name(RenameMode::Both)), true), Change::Complete);
        // Renamed away (vim keeping a backup): more is coming.
        assert_eq!(change(&EventKind::Modify(ModifyKind::Name(RenameMode::Both)), false), Change::Ongoing);
        assert_eq!(change(&EventKind::Modify(ModifyKind::Name(RenameMode::From)), true), Change::Ongoing);
        assert_eq!(change(&EventKind::Create(CreateKind::File), true), Change::Ongoing);
        assert_eq!(change(&EventKind::Access(AccessKind::Close(AccessMode::Read)), true), Change::None);
    }

    #[test]
    fn only_writes_and_namespace_changes_matter() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert!(relevant(&EventKind::Create(CreateKind::File)));
        assert!(relevant(&EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(relevant(&EventKind::Remove(RemoveKind::File)));
        assert!(relevant(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!relevant(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!relevant(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
    }

    #[test]
    fn a_symlinked_file_is_watched_at_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        std::fs::write(real_dir.join("target.toml"), "x").unwrap();
        let link = dir.path().join("icmpguard.toml");
        std::os::unix::fs::symlink(real_dir.join("target.toml"), &link).unwrap();
        let w = watched(&link);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().any(|(_, n)| n == "target.toml"));
    }

    #[test]
    fn stamps_change_with_content_and_with_renames() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c");
        std::fs::write(&f, "a").unwrap();
        let s1 = Stamp::of(&f).unwrap();
        std::fs::write(dir.path().join("n"), "a").unwrap();
        std::fs::rename(dir.path().join("n"), &f).unwrap();
        assert_ne!(Stamp::of(&f).unwrap(), s1);
        assert_eq!(Stamp::of(&dir.path().join("missing")), None);
    }
}
