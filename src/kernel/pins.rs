//! The pin directory: where the filter lives between daemon runs.
//!
//! ```text
//! pin_dir/                 mode 0700, flock()ed by the daemon for its life
//!   current -> gen_N       symlink, replaced atomically on migration
//!   gen_N/<map>            the maps of generation N
//!   links/<ifname>/xdp_native | xdp_generic | tcx_egress
//! ```
//!
//! bpffs refuses '.' in names, and interface names may hold one: a '.' in
//! an interface name is stored as ':', which no interface name contains.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::statfs::{statfs, BPF_FS_MAGIC};

use crate::error::{Error, Result};

const CURRENT: &str = "current";
const GEN_PREFIX: &str = "gen_";
const LINKS: &str = "links";

pub struct PinDir {
    path: PathBuf,
    /// Held for the life of a daemon (or an unload); `status` holds none.
    _lock: Option<Flock<File>>,
}

fn pin_error(path: &Path, msg: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::PinDir { path: path.to_path_buf(), msg: msg.into(), hint: hint.into() }
}

/// Checks that `path` (or, if it does not exist yet, its nearest existing
/// ancestor) is on a bpffs.
fn check_bpffs(path: &Path) -> Result<()> {
    let mut probe = path;
    loop {
        match statfs(probe) {
            Ok(st) if st.filesystem_type() == BPF_FS_MAGIC => return Ok(()),
            Ok(_) => {
                return Err(pin_error(
                    path,
                    format!("{} is not on a bpffs, where BPF objects can be pinned", probe.display()),
                    format!(
                        "mount one (`mount -t bpf bpf /sys/fs/bpf`) or set pin_dir to a directory below a bpffs mount (now: {})",
                        probe.display()
                    ),
                ))
            }
            Err(nix::errno::Errno::ENOENT) => match probe.parent() {
                Some(parent) => probe = parent,
                None => return Err(pin_error(path, "no existing ancestor", "check the path")),
            },
            Err(e) => {
                return Err(pin_error(path, format!("cannot inspect {}: {e}", probe.display()), "run as root"))
            }
        }
    }
}

/// Where systemd (and bpftool, when it has to) mounts the BPF file system.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// When `pin_dir` is under /sys/fs/bpf and no bpffs is mounted there (a
/// host without systemd), mounts one, as bpftool does. Returns whether it
/// did.
pub fn mount_bpffs_if_missing(pin_dir: &Path) -> Result<bool> {
    let mount_point = Path::new(BPFFS_MOUNT);
    if !pin_dir.starts_with(mount_point) {
        return Ok(false);
    }
    match statfs(mount_point) {
        Ok(st) if st.filesystem_type() == BPF_FS_MAGIC => return Ok(false),
        Ok(_) => {}
        Err(e) => {
            return Err(pin_error(
                pin_dir,
                format!("cannot inspect {BPFFS_MOUNT}: {e}"),
                "run as root on a kernel with sysfs",
            ))
        }
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| {
        pin_error(
            pin_dir,
            format!("no bpffs is mounted at {BPFFS_MOUNT}, and mounting one failed: {e}"),
            format!(
                "mount it (`mount -t bpf bpf {BPFFS_MOUNT}`, which needs CAP_SYS_ADMIN), or point pin_dir at a bpffs"
            ),
        )
    })?;
    Ok(true)
}

impl PinDir {
    /// For `run`: creates the directory (mode 0700) if needed and takes the
    /// exclusive lock that keeps a second daemon out.
    pub fn create_locked(path: &Path, pid_of_holder: impl Fn(&PinDir) -> Option<u32>) -> Result<PinDir> {
        check_bpffs(path)?;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| {
            pin_error(path, format!("cannot create: {e}"), "run as root; bpffs names may not contain '.'")
        })?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| pin_error(path, format!("cannot set mode 0700: {e}"), "run as root"))?;
        PinDir::lock(path, pid_of_holder)
    }

    /// For `unload`: locks an existing directory; `None` if there is none.
    pub fn lock_existing(path: &Path, pid_of_holder: impl Fn(&PinDir) -> Option<u32>) -> Result<Option<PinDir>> {
        if !path.exists() {
            return Ok(None);
        }
        check_bpffs(path)?;
        PinDir::lock(path, pid_of_holder).map(Some)
    }

    /// For `status`: reads without locking; `None` if there is nothing.
    pub fn open_unlocked(path: &Path) -> Result<Option<PinDir>> {
        if !path.exists() {
            return Ok(None);
        }
        check_bpffs(path)?;
        Ok(Some(PinDir { path: path.to_path_buf(), _lock: None }))
    }

    fn lock(path: &Path, pid_of_holder: impl Fn(&PinDir) -> Option<u32>) -> Result<PinDir> {
        let dir = File::open(path).map_err(|e| pin_error(path, format!("cannot open: {e}"), "run as root"))?;
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(PinDir { path: path.to_path_buf(), _lock: Some(lock) }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let unlocked = PinDir { path: path.to_path_buf(), _lock: None };
                Err(Error::Busy { path: path.to_path_buf(), pid: pid_of_holder(&unlocked) })
            }
            Err((_, e)) => Err(pin_error(path, format!("cannot lock: {e}"), "run as root")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation `current` points at, and its directory.
    pub fn current(&self) -> Option<(u64, PathBuf)> {
        let target = fs::read_link(self.path.join(CURRENT)).ok()?;
        let n = target.to_str()?.strip_prefix(GEN_PREFIX)?.parse().ok()?;
        let dir = self.path.join(&target);
        dir.is_dir().then_some((n, dir))
    }

    pub fn gen_dir(&self, n: u64) -> PathBuf {
        self.path.join(format!("{GEN_PREFIX}{n}"))
    }

    /// A new, empty directory for generation `n` (a leftover of an
    /// interrupted migration is removed first).
    pub fn create_gen_dir(&self, n: u64) -> Result<PathBuf> {
        let dir = self.gen_dir(n);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .map_err(|e| pin_error(&dir, format!("cannot remove a leftover: {e}"), "run as root"))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| pin_error(&dir, format!("cannot create: {e}"), "run as root"))?;
        Ok(dir)
    }

    /// Points `current` at generation `n`, atomically.
    pub fn set_current(&self, n: u64) -> Result<()> {
        let tmp = self.path.join("current_new");
        let _ = fs::remove_file(&tmp);
        symlink(format!("{GEN_PREFIX}{n}"), &tmp)
            .and_then(|()| fs::rename(&tmp, self.path.join(CURRENT)))
            .map_err(|e| pin_error(&self.path, format!("cannot switch to generation {n}: {e}"), "run as root"))
    }

    /// Removes every generation directory but `keep`.
    pub fn remove_other_gens(&self, keep: u64) -> io::Result<Vec<u64>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|s| s.strip_prefix(GEN_PREFIX)).and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if n != keep {
                fs::remove_dir_all(entry.path())?;
                removed.push(n);
            }
        }
        Ok(removed)
    }

    /// The directory of an interface's link pins.
    pub fn iface_dir(&self, iface: &str) -> PathBuf {
        self.path.join(LINKS).join(iface.replace('.', ":"))
    }

    /// Interfaces that have a link directory, with their pinned link files.
    pub fn pinned_ifaces(&self) -> Vec<(String, Vec<(String, PathBuf)>)> {
        let mut out = Vec::new();
        let Ok(dirs) = fs::read_dir(self.path.join(LINKS)) else {
            return out;
        };
        for d in dirs.flatten() {
            let iface = d.file_name().to_string_lossy().replace(':', ".");
            let mut files: Vec<(String, PathBuf)> = fs::read_dir(d.path())
                .map(|it| it.flatten().map(|f| (f.file_name().to_string_lossy().into_owned(), f.path())).collect())
                .unwrap_or_default();
            files.sort();
            out.push((iface, files));
        }
        out.sort();
        out
    }

    /// The pinned link files of one interface.
    pub fn iface_links(&self, iface: &str) -> Vec<(String, PathBuf)> {
        let mut files: Vec<(String, PathBuf)> = fs::read_dir(self.iface_dir(iface))
            .map(|it| it.flatten().map(|f| (f.file_name().to_string_lossy().into_owned(), f.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    pub fn ensure_iface_dir(&self, iface: &str) -> Result<PathBuf> {
        let dir = self.iface_dir(iface);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| pin_error(&dir, format!("cannot create: {e}"), "run as root"))?;
        Ok(dir)
    }

    /// Removes an interface's link directory if it is empty.
    pub fn prune_iface_dir(&self, iface: &str) {
        let _ = fs::remove_dir(self.iface_dir(iface));
    }

    /// Removes the whole directory (the caller detached the links first).
    pub fn remove_all(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.path)
    }

    /// Whether a daemon holds the directory's lock right now.
    pub fn daemon_running(&self) -> bool {
        let Ok(dir) = File::open(&self.path) else { return false };
        match Flock::lock(dir, FlockArg::LockSharedNonblock) {
            Ok(_) => false,
            Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
        }
    }

    /// Whether the path still leads to the very directory this PinDir
    /// locked (not one recreated in its place), on a bpffs.
    pub fn is_live(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(lock) = &self._lock else { return self.still_mounted() };
        match (lock.metadata(), fs::metadata(&self.path)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino() && self.still_mounted(),
            _ => false,
        }
    }

    /// Whether the directory is still a usable bpffs directory (it can be
    /// unmounted under a running daemon).
    pub fn still_mounted(&self) -> bool {
        File::open(&self.path)
            .and_then(|f| nix::sys::statfs::fstatfs(f.as_fd()).map_err(io::Error::from))
            .is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
    }
}
