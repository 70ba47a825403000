//! The kernel boundary: the only user of the skeleton. Loading, pinning,
//! adopting pinned objects, attaching and map I/O live here behind a small
//! API; the daemon, `status` and `unload` talk to nothing else.

mod generation;
mod hints;
mod links;
mod maps;
mod netlink;
pub mod pins;
pub mod probe;
mod refusal;
mod sizes;
pub mod sys;
mod table;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libbpf_rs::{MapCore, MapHandle};

pub use self::generation::{
    abi_constants, abi_version, capacity_for, limit_times, tracked_sources, Generation, Outcome, Reuse, Sizes,
};
pub use self::links::PinnedLink;
pub use self::maps::limit_key;
pub use self::maps::Maps;
pub use self::pins::{mount_bpffs_if_missing, PinDir};
pub use self::sizes::{drop_counter_budget, DROP_COUNTER_BUDGET};
pub use self::sys::{LinkTarget, TestRun};

use crate::addr::{PerFamily, Prefix};
use crate::error::{Error, Result};
use crate::plan::{AttachMode, Desired, Plan, Rule, Rules};
use crate::skel::types;

/// How much an operational message matters; the daemon maps it to a
/// syslog severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Notice,
    Info,
}

/// Where the kernel side's operational messages go.
pub type Log<'a> = &'a mut dyn FnMut(Level, String);

/// What one reconcile changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
    pub enforced: usize,
    /// Set when the rules moved to new maps (they outgrew the old ones,
    /// or a table needed another seed): the new maps' capacity.
    pub new_capacity: Option<u32>,
    pub elapsed: Duration,
    /// Where a start's time went: creating the maps and loading the
    /// programs, filling the maps, attaching (`None` for a reload).
    pub parts: Option<Parts>,
}

/// What verifying a filter adopted on the record found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub applied: Applied,
    /// The settings map differed from what the file asks.
    pub settings_repaired: bool,
}

impl Verified {
    /// Whether anything had changed behind the last daemon's back.
    pub fn drift(&self) -> bool {
        self.applied.added + self.applied.removed > 0 || self.applied.new_capacity.is_some() || self.settings_repaired
    }
}

/// The parts of a start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Creating the maps; zero when pinned maps were adopted.
    pub maps: Duration,
    /// Loading (verifying) the programs; zero when pinned programs were
    /// adopted.
    pub load: Duration,
    /// Writing the entries into the maps.
    pub fill: Duration,
    /// Attaching (or checking) every interface's hooks.
    pub attach: Duration,
}

/// The pid of the daemon that holds a pin directory, from its meta map.
fn holder_pid(pins: &PinDir) -> Option<u32> {
    let (_, dir) = pins.current()?;
    let meta = MapHandle::from_pinned_path(dir.join("meta")).ok()?;
    let maps_meta: types::ig_meta = {
        let v = libbpf_rs::MapCore::lookup(&meta, sys::bytes_of(&0u32), libbpf_rs::MapFlags::ANY).ok()??;
        sys::from_bytes(&v)?
    };
    (maps_meta.daemon_pid != 0).then_some(maps_meta.daemon_pid)
}

/// The filter a daemon runs: one generation of maps and programs, pinned,
/// and the links that attach it.
pub struct Filter {
    pins: PinDir,
    gen: Generation,
    number: u64,
    meta: types::ig_meta,
    /// Per interface, the last problem reported, so that a retry that fails
    /// the same way is not logged again.
    problems: HashMap<String, String>,
    /// The links this daemon keeps attached, held open: if the pins vanish
    /// (bpffs unmounted, pin_dir removed) the filter keeps enforcing, and
    /// the links are pinned again when pin_dir is back.
    held: HashMap<(String, LinkTarget), PinnedLink>,
    /// Whether pin_dir was found gone (reported once).
    pins_lost: bool,
    /// Adopted on the record (the meta map's digest of the last applied
    /// state equals the file's): the rules are not read back and verified
    /// yet. [`Filter::verify`] does it, and so does any reconcile first.
    unverified: bool,
}

impl Filter {
    /// Takes the pin directory for this daemon (refusing if another holds it).
    pub fn lock_pins(pin_dir: &Path) -> Result<PinDir> {
        PinDir::create_locked(pin_dir, holder_pid)
    }

    /// Adopts what is pinned (or builds the filter from nothing), brings it
    /// in line with `desired`, and attaches it to its interfaces.
    pub fn start(pins: PinDir, desired: &Desired<'_>, log: Log<'_>) -> Result<(Filter, Applied)> {
        let started = Instant::now();
        let current = pins.current();
        let (adopted, previous) = match &current {
            Some((n, dir)) => adopt_pinned(*n, dir, desired, log)?,
            None => (None, None),
        };
        let (filter, applied) = Filter::adopt_or_build(pins, adopted, previous, current, desired, started, log)?;
        Ok(filter.attach_all(applied, desired, started, log))
    }

    /// A restart on the record: adopts the pinned filter if its maps hold
    /// the state of `digest` (the record's, of the file as last applied)
    /// with this binary's programs, and attaches it as [`Filter::start`]
    /// does. `desired` is the file without its block list: only its
    /// interfaces and the limiter's size are used; nothing is written to
    /// the maps, which stay unverified until [`Filter::verify`] is given
    /// the whole file. Anything else gives `pins` back, untouched, for
    /// [`Filter::start`] with the whole file.
    pub fn start_on_record(
        pins: PinDir,
        digest: u64,
        desired: &Desired<'_>,
        log: Log<'_>,
    ) -> Result<std::result::Result<(Filter, Applied), PinDir>> {
        let started = Instant::now();
        let Some((n, dir)) = pins.current() else { return Ok(Err(pins)) };
        let Some(adopted) = adopt_on_record(n, &dir, digest, desired) else { return Ok(Err(pins)) };
        let (filter, applied) =
            Filter::adopt_or_build(pins, Some(adopted), None, Some((n, dir)), desired, started, log)?;
        Ok(Ok(filter.attach_all(applied, desired, started, log)))
    }

    /// [`Filter::start`] once the pinned generation has been looked at: the
    /// filter adopted (brought in line with `desired`, but on the record),
    /// or a new generation built, not attached yet.
    fn adopt_or_build(
        pins: PinDir,
        adopted: Option<Adopted>,
        previous: Option<Maps>,
        current: Option<(u64, std::path::PathBuf)>,
        desired: &Desired<'_>,
        started: Instant,
        log: Log<'_>,
    ) -> Result<(Filter, Applied)> {
        Ok(match adopted {
            Some(Adopted { gen, number, meta, how }) => {
                let entries = if how.on_record() { meta.entries as usize } else { gen.rules().len() };
                log(
                    Level::Info,
                    format!(
                        "adopted pinned filter generation {number} ({entries} entries, capacity {}; {})",
                        gen.capacity(),
                        match how {
                            How::OnRecord => "its programs, not loaded again; the file is what it last applied, the maps are verified once ready",
                            How::OnRestartRecord => "its programs, not loaded again; on the restart record, the file unchanged since it was applied: it is read whole and the maps verified once ready",
                            How::ReadBack => "its programs, not loaded again",
                            How::Loaded => "programs of this binary loaded on its maps",
                        }
                    ),
                );
                let mut f = Filter {
                    pins,
                    gen,
                    number,
                    meta,
                    problems: HashMap::new(),
                    held: HashMap::new(),
                    pins_lost: false,
                    unverified: how.on_record(),
                };
                let applied = if f.unverified {
                    Applied {
                        added: 0,
                        removed: 0,
                        enforced: entries,
                        new_capacity: None,
                        elapsed: started.elapsed(),
                        parts: None,
                    }
                } else {
                    f.reconcile(desired, log)?
                };
                (f, applied)
            }
            None => {
                let number = current.as_ref().map_or(1, |(n, _)| n + 1);
                // Interfaces without a link are attached during the fill.
                let (gen, fill, early) = build_generation(&pins, number, desired, previous.as_ref(), true)?;
                let early_attach = early.map_or(Duration::ZERO, |e| {
                    for (level, line) in e.lines {
                        log(level, line);
                    }
                    e.attach
                });
                // As build_generation wrote it (with the pinned programs' object).
                let meta = gen.maps.read_meta().unwrap_or_default();
                let mut f = Filter {
                    pins,
                    gen,
                    number,
                    meta,
                    problems: HashMap::new(),
                    held: HashMap::new(),
                    pins_lost: false,
                    unverified: false,
                };
                let entries = f.gen.rules().len();
                let applied = Applied {
                    added: entries,
                    removed: 0,
                    enforced: entries,
                    new_capacity: None,
                    elapsed: started.elapsed(),
                    parts: Some(Parts {
                        maps: f.gen.load_time.maps,
                        load: f.gen.load_time.programs,
                        fill,
                        // While filling; what sync_interfaces takes is added.
                        attach: early_attach,
                    }),
                };
                f.record(Some((&applied, desired.digest())))?;
                (f, applied)
            }
        })
    }

    /// Attaches the filter to `desired`'s interfaces and retires the other
    /// generations: the end of a start.
    fn attach_all(
        mut self,
        mut applied: Applied,
        desired: &Desired<'_>,
        started: Instant,
        log: Log<'_>,
    ) -> (Filter, Applied) {
        let attaching = Instant::now();
        self.sync_interfaces(&desired.interfaces, desired.mode, log);
        let load = self.gen.load_time;
        let mut parts = applied.parts.unwrap_or(Parts { maps: load.maps, load: load.programs, ..Parts::default() });
        parts.attach += attaching.elapsed();
        applied.parts = Some(parts);
        applied.elapsed = started.elapsed();
        // Only now that every link runs this generation's programs can the
        // others go.
        match self.pins.remove_other_gens(self.number) {
            Ok(gone) if !gone.is_empty() => {
                log(Level::Info, format!("removed retired generation(s) {gone:?}"));
            }
            Ok(_) => {}
            Err(e) => log(Level::Warning, format!("cannot remove retired generations: {e}")),
        }
        (self, applied)
    }

    /// Brings rules and settings in line with `desired`: only the
    /// difference is written, additions before deletions. When the rules
    /// outgrew the maps, a larger generation is built beside the running one
    /// and swapped in.
    pub fn reconcile(&mut self, desired: &Desired<'_>, log: Log<'_>) -> Result<Applied> {
        let started = Instant::now();
        let unusable = if std::mem::take(&mut self.unverified) { self.gen.read_back()? } else { None };
        if self.meta.applied_digest != 0 {
            // From here until the record below, the maps may hold neither
            // the old state nor the new one.
            self.meta.applied_digest = 0;
            self.gen.maps.write_meta(&self.meta)?;
        }
        let plan: Plan = desired.plan(self.gen.rules());
        let applied = |enforced: usize, new_capacity: Option<u32>| Applied {
            added: plan.add.len(),
            removed: plan.remove.len(),
            enforced,
            new_capacity,
            elapsed: started.elapsed(),
            parts: None,
        };
        let rebuild = if let Some(why) = unusable {
            why
        } else if let Some(why) = self.gen.cannot_take(&plan) {
            why
        } else if self.gen.sources() != generation::tracked_sources(desired.sources) {
            let asked = generation::tracked_sources(desired.sources);
            format!("the rate limiter tracks {} sources, the file asks for {asked}", self.gen.sources())
        } else {
            self.gen.set_settings(desired.settings)?;
            match self.gen.apply(&plan)? {
                Outcome::Applied => {
                    let done = applied(self.gen.rules().len(), None);
                    // Taken once the change is enforced: a walk of every
                    // entry, not on the way to enforcing it.
                    self.record(Some((&done, desired.digest())))?;
                    return Ok(done);
                }
                Outcome::Rebuild => "an address found no slot within its table's probe bound".to_string(),
            }
        };
        let number = self.number + 1;
        let (gen, _, _) = build_generation(&self.pins, number, desired, Some(&self.gen.maps), false)?;
        let capacity = gen.capacity();
        log(Level::Notice, format!("{rebuild}: moved to generation {number} (capacity {capacity}) without a gap"));
        let old = std::mem::replace(&mut self.gen, gen);
        self.number = number;
        self.repoint_links(log);
        drop(old);
        if let Err(e) = self.pins.remove_other_gens(number) {
            log(Level::Warning, format!("cannot remove the retired generation: {e}"));
        }
        let done = applied(self.gen.rules().len(), Some(capacity));
        self.record(Some((&done, desired.digest())))?;
        Ok(done)
    }

    /// Notes a refused reload (the file was invalid; nothing changed).
    pub fn record_refused(&mut self) -> Result<()> {
        self.record(None)
    }

    /// Verifies a filter adopted on the record (the maps read back and
    /// brought in line with `desired`, settings rewritten); `None` when it
    /// was verified already. What it had to change is drift: the maps were
    /// changed since the last daemon applied this file.
    pub fn verify(&mut self, desired: &Desired<'_>, log: Log<'_>) -> Result<Option<Verified>> {
        if !self.unverified {
            return Ok(None);
        }
        let settings = |maps: &Maps| maps.read_settings().map(|s| sys::bytes_of(&s).to_vec());
        let before = settings(&self.gen.maps);
        let applied = self.reconcile(desired, log)?;
        let settings_repaired = settings(&self.gen.maps) != before;
        Ok(Some(Verified { applied, settings_repaired }))
    }

    /// Records a reload in the meta map: applied (with the digest of what
    /// the maps hold now) or refused.
    fn record(&mut self, applied: Option<(&Applied, u64)>) -> Result<()> {
        let m = &mut self.meta;
        m.abi_version = abi_version();
        m.daemon_pid = std::process::id();
        m.generation = self.number;
        m.capacity = u64::from(self.gen.capacity());
        m.last_reload_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        m.entries = self.gen.rules().len() as u32;
        match applied {
            Some((a, digest)) => {
                m.applied_digest = digest;
                m.last_reload_ok = 1;
                m.last_reload_us = a.elapsed.as_micros() as u64;
                m.last_reload_added = a.added as u32;
                m.last_reload_removed = a.removed as u32;
                m.reloads += 1;
            }
            None => {
                m.last_reload_ok = 0;
                m.reloads_refused += 1;
            }
        }
        self.gen.maps.write_meta(&self.meta)
    }

    /// Marks the filter as running without a daemon (on exit).
    pub fn release(&mut self) {
        self.meta.daemon_pid = 0;
        let _ = self.gen.maps.write_meta(&self.meta);
    }

    /// The ring buffer of the current generation.
    pub fn events(&self) -> &MapHandle {
        &self.gen.maps.events
    }

    /// Starts a new second of the in-kernel event budget (the daemon calls
    /// this once a second).
    pub fn reset_event_budget(&self) -> Result<()> {
        self.gen.maps.reset_event_budget()
    }

    pub fn counters(&self) -> types::ig_counters {
        self.gen.maps.read_counters()
    }

    /// Counters per direction (enum ig_direction).
    pub fn counters_by_direction(&self) -> [types::ig_counters; 2] {
        self.gen.maps.read_counters_by_direction()
    }

    /// What the filter records beside the maps: reloads, their results.
    pub fn meta(&self) -> &types::ig_meta {
        &self.meta
    }

    pub fn rules(&self) -> &Rules {
        self.gen.rules()
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    /// Makes every pinned link run this generation's programs.
    fn repoint_links(&mut self, log: Log<'_>) {
        for (iface, files) in self.pins.pinned_ifaces() {
            for (file, path) in files {
                let Some(target) = links::target_of(&file) else {
                    continue;
                };
                let Ok(link) = PinnedLink::open(&path, target, links::ifindex(&iface)) else {
                    continue;
                };
                if let Err(e) = self.update_link(link) {
                    log(
                        Level::Err,
                        format!(
                            "interface {iface}: cannot swap the {target} program: {e}; the previous one stays attached"
                        ),
                    );
                }
            }
        }
    }

    /// Makes `link` run this generation's program (in place, no gap).
    fn update_link(&self, link: PinnedLink) -> std::io::Result<PinnedLink> {
        let (prog, id) = if link.target.is_egress() {
            (self.gen.tcx_fd(), self.gen.tcx_id)
        } else {
            (self.gen.xdp_fd(), self.gen.xdp_id)
        };
        link.update(prog, id)
    }

    /// Attaches to every interface in `cfg` that is not attached yet,
    /// detaches from interfaces no longer in it, and swaps in this
    /// generation's programs where an older one runs. Problems are logged
    /// (once per change) and retried on the next call. Returns whether every
    /// configured interface is fully attached.
    pub fn sync_interfaces(&mut self, interfaces: &[String], mode: AttachMode, log: Log<'_>) -> bool {
        if !self.check_pins(log) {
            return false;
        }
        let wanted: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        self.held.retain(|(iface, _), _| wanted.contains(&iface.as_str()));
        let pinned = self.pins.pinned_ifaces();

        for (iface, files) in &pinned {
            if wanted.contains(&iface.as_str()) {
                continue;
            }
            links::remove_iface_pins(iface, files, |path, e| {
                log(Level::Warning, format!("interface {iface}: cannot remove {}: {e}", path.display()));
            });
            self.pins.prune_iface_dir(iface);
            self.problems.remove(iface);
            log(Level::Notice, format!("interface {iface}: detached (no longer configured)"));
        }

        let mut all_ok = true;
        for iface in wanted {
            self.repin_held(iface);
            let files = self.pins.iface_links(iface);
            match self.sync_one(iface, &files, mode, log) {
                Ok(None) => {
                    self.problems.remove(iface);
                }
                Ok(Some(done)) => {
                    self.problems.remove(iface);
                    log(Level::Info, format!("interface {iface}: attached ({done})"));
                }
                Err(problem) => {
                    all_ok = false;
                    if self.problems.get(iface) != Some(&problem) {
                        log(Level::Err, problem.clone());
                        self.problems.insert(iface.to_string(), problem);
                    }
                }
            }
        }
        all_ok
    }

    /// What is enforced where, for the start and reload lines: per
    /// interface, the hook of each direction or that it is not guarded.
    /// The second value is false when any direction is not guarded.
    pub fn coverage(&self, ifaces: &[&str]) -> (String, bool) {
        let mut all = true;
        let parts: Vec<String> = ifaces
            .iter()
            .map(|iface| {
                let hook = |egress: bool| {
                    self.held
                        .keys()
                        .find(|(name, t)| name == iface && t.is_egress() == egress)
                        .map(|(_, t)| t.to_string())
                };
                let mut say = |dir: &str, h: Option<String>| match h {
                    Some(h) => format!("{dir} {h}"),
                    None => {
                        all = false;
                        format!("{dir} NOT guarded")
                    }
                };
                let ingress = say("ingress", hook(false));
                let egress = say("egress", hook(true));
                format!("{iface}: {ingress}, {egress}")
            })
            .collect();
        (parts.join("; "), all)
    }

    /// Pins again the held links of `iface` whose pin went away (pin_dir
    /// recreated): the link is still attached, attaching anew would fail.
    fn repin_held(&mut self, iface: &str) {
        let dir = self.pins.iface_dir(iface);
        let mut dead = Vec::new();
        for ((name, target), link) in &self.held {
            if name != iface || link.path.exists() {
                continue;
            }
            let attached = links::ifindex(iface).is_some_and(|i| link.attached_to(i));
            if !attached || self.pins.ensure_iface_dir(iface).is_err() {
                dead.push(*target);
                continue;
            }
            let path = dir.join(links::file_name(*target));
            if sys::obj_pin(std::os::fd::AsFd::as_fd(&link.fd), &path).is_err() {
                dead.push(*target);
            }
        }
        for target in dead {
            self.held.remove(&(iface.to_string(), target));
        }
    }

    /// Whether pin_dir is there. When it is gone (bpffs unmounted, the
    /// directory removed) the filter goes on enforcing from the daemon's
    /// own references, and reloads go on changing the maps; once pin_dir
    /// can be created again, everything is pinned there anew.
    pub fn check_pins(&mut self, log: Log<'_>) -> bool {
        let fine = self.pins.is_live() && self.pins.current() == Some((self.number, self.pins.gen_dir(self.number)));
        if fine {
            return true;
        }
        match self.repin() {
            Ok(()) => {
                if self.pins_lost {
                    log(
                        Level::Notice,
                        format!("pin_dir {} is back: the filter is pinned again", self.pins.path().display()),
                    );
                }
                self.pins_lost = false;
                true
            }
            Err(e) => {
                if !self.pins_lost {
                    log(
                        Level::Err,
                        format!(
                            "pin_dir {} is gone ({}); the filter keeps enforcing while this daemon runs, and is pinned again once pin_dir can be recreated",
                            self.pins.path().display(),
                            e.to_string().lines().next().unwrap_or_default()
                        ),
                    );
                }
                self.pins_lost = true;
                false
            }
        }
    }

    /// Pins the current generation and the held links in a new pin_dir.
    fn repin(&mut self) -> Result<()> {
        if !self.pins.is_live() {
            // A new directory (a new bpffs, or pin_dir recreated): lock it.
            let path = self.pins.path().to_path_buf();
            self.pins = PinDir::create_locked(&path, holder_pid)?;
        }
        let dir = self.pins.create_gen_dir(self.number)?;
        self.gen.maps.pin(&dir)?;
        self.gen.pin_programs(&dir, &mut self.meta)?;
        self.pins.set_current(self.number)?;
        for ((iface, target), link) in &self.held {
            let dir = self.pins.ensure_iface_dir(iface)?;
            let pin = dir.join(links::file_name(*target));
            if !pin.exists() {
                sys::obj_pin(std::os::fd::AsFd::as_fd(&link.fd), &pin)
                    .map_err(|e| Error::kernel_io(format!("pinning a link at {}", pin.display()), e, ""))?;
            }
        }
        self.gen.maps.write_meta(&self.meta)?;
        Ok(())
    }

    /// Returns what was newly attached (None: nothing to do), or the problem.
    fn sync_one(
        &mut self,
        iface: &str,
        files: &[(String, std::path::PathBuf)],
        mode: AttachMode,
        log: Log<'_>,
    ) -> std::result::Result<Option<String>, String> {
        let ifindex = links::ifindex(iface);
        let mut have_xdp = false;
        let mut have_tcx = false;
        for (file, path) in files {
            let Some(target) = links::target_of(file) else {
                continue;
            };
            let link = match PinnedLink::open(path, target, ifindex) {
                Ok(l) => l,
                Err(_) => {
                    let _ = std::fs::remove_file(path);
                    continue;
                }
            };
            let is_xdp = !target.is_egress();
            let stale = Some(link.ifindex) != ifindex;
            let wrong_mode = is_xdp && !links::xdp_targets(mode).contains(&target);
            if stale || wrong_mode {
                if wrong_mode && !stale {
                    log(
                        Level::Warning,
                        format!("interface {iface}: switching XDP to mode {mode}; ingress is unguarded for a moment"),
                    );
                }
                self.held.remove(&(iface.to_string(), target));
                let _ = link.remove();
                continue;
            }
            let link = match self.update_link(link) {
                Ok(link) => link,
                Err(e) => return Err(format!("interface {iface}: cannot swap the {target} program: {e}")),
            };
            if is_xdp {
                have_xdp = true;
            } else {
                have_tcx = true;
            }
            self.held.insert((iface.to_string(), target), link);
        }

        let Some(ifindex) = ifindex else {
            return Err(format!(
                "interface {iface}: no such interface; it is attached when it appears (see `ip link`)"
            ));
        };
        let mut done = Vec::new();
        if !have_xdp || !have_tcx {
            self.pins.ensure_iface_dir(iface).map_err(|e| e.to_string())?;
        }
        if !have_xdp {
            let mut last_err: Option<Error> = None;
            for &target in links::xdp_targets(mode) {
                let path = self.pins.iface_dir(iface).join(links::file_name(target));
                match links::attach(self.gen.xdp_fd(), iface, ifindex, target, &path) {
                    Ok(link) => {
                        self.held.insert((iface.to_string(), target), link);
                        if let Some(e) = last_err.take() {
                            let why = e.to_string().lines().next().unwrap_or_default().to_string();
                            log(Level::Notice, format!("{why}; falling back to generic XDP on {iface}"));
                        }
                        done.push(target.to_string());
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            if let Some(e) = last_err {
                return Err(e.to_string());
            }
        }
        if !have_tcx {
            let target = match probe::facilities().egress() {
                probe::EgressHook::Tcx => LinkTarget::TcxEgress,
                probe::EgressHook::Tc => LinkTarget::TcEgress,
            };
            let path = self.pins.iface_dir(iface).join(links::file_name(target));
            let link = links::attach(self.gen.tcx_fd(), iface, ifindex, target, &path).map_err(|e| e.to_string())?;
            self.held.insert((iface.to_string(), target), link);
            done.push(target.to_string());
        }
        Ok((!done.is_empty()).then(|| done.join(", ")))
    }
}

/// How a pinned generation was adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// Its programs, and the maps on the record: their meta says they hold
    /// what `desired` asks (the same digest); read back after READY=1.
    OnRecord,
    /// The same, the file not read yet: the restart record says it is the
    /// version whose state the maps hold (see crate::restart).
    OnRestartRecord,
    /// Its programs, the maps read back.
    ReadBack,
    /// This binary's programs loaded on its maps (and pinned).
    Loaded,
}

impl How {
    /// Adopted without reading the maps back: they are verified later.
    fn on_record(self) -> bool {
        matches!(self, How::OnRecord | How::OnRestartRecord)
    }
}

/// A pinned generation adopted, with its meta.
struct Adopted {
    gen: Generation,
    number: u64,
    meta: types::ig_meta,
    how: How,
}

/// What the pinned generation `n` in `dir` can be: adopted with its
/// programs (they are this binary's), adopted with this binary's programs
/// loaded on its maps, or only the previous maps of a migration.
fn adopt_pinned(n: u64, dir: &Path, desired: &Desired<'_>, log: Log<'_>) -> Result<(Option<Adopted>, Option<Maps>)> {
    let maps = match Maps::open_pinned(dir) {
        Ok(maps) => maps,
        Err(e) => {
            match pinned_abi_version(dir) {
                // An upgrade: the older binary's maps are another set (a
                // map was added or removed), not damaged.
                Some(v) if v != generation::abi_version() => log(
                    Level::Notice,
                    format!(
                        "pinned generation {n} has layout version {v}, this binary uses {}, with other maps; \
                         building a new one beside it (its drop counters start from zero)",
                        generation::abi_version()
                    ),
                ),
                _ => log(Level::Warning, format!("pinned generation {n} is unusable ({e}); building a new one")),
            }
            return Ok((None, None));
        }
    };
    if let Some(mut gen) = Generation::with_programs(&maps, dir)? {
        // The pinned programs are this binary's: nothing to load.
        let meta = maps.read_meta().unwrap_or_default();
        if on_record(&meta, &gen, desired.digest(), desired) {
            return Ok((Some(Adopted { gen, number: n, meta, how: How::OnRecord }), None));
        }
        if gen.read_back()?.is_none() {
            return Ok((Some(Adopted { gen, number: n, meta, how: How::ReadBack }), None));
        }
    }
    match Generation::adopt(&maps)? {
        Reuse::Adopted(g) => {
            // New programs on the pinned maps: they are the ones pinned
            // from now on.
            let mut meta = maps.read_meta().unwrap_or_default();
            g.pin_programs(dir, &mut meta)?;
            Ok((Some(Adopted { gen: *g, number: n, meta, how: How::Loaded }), None))
        }
        Reuse::Incompatible(why) => {
            log(Level::Notice, format!("pinned filter generation {n} cannot be reused ({why}); migrating it"));
            Ok((None, Some(maps)))
        }
    }
}

/// Whether the maps of `gen` hold the state of `digest` (their meta says
/// the last daemon applied it to them) with the limiter `desired` asks for.
fn on_record(meta: &types::ig_meta, gen: &Generation, digest: u64, desired: &Desired<'_>) -> bool {
    digest != 0 && meta.applied_digest == digest && gen.sources() == generation::tracked_sources(desired.sources)
}

/// The pinned generation `n` in `dir`, adopted on the record of `digest`
/// with its programs, if they are this binary's and its maps hold that
/// state; `None` (nothing changed) otherwise.
fn adopt_on_record(n: u64, dir: &Path, digest: u64, desired: &Desired<'_>) -> Option<Adopted> {
    let maps = Maps::open_pinned(dir).ok()?;
    let gen = Generation::with_programs(&maps, dir).ok()??;
    let meta = maps.read_meta().unwrap_or_default();
    on_record(&meta, &gen, digest, desired).then_some(Adopted { gen, number: n, meta, how: How::OnRestartRecord })
}

/// ICMPGUARD_ABI_VERSION of the maps pinned in `dir`: the first 4 bytes
/// of the meta map's value, whatever the rest of the record is in that
/// version.
fn pinned_abi_version(dir: &Path) -> Option<u32> {
    let meta = MapHandle::from_pinned_path(dir.join("meta")).ok()?;
    let value = meta.lookup(sys::bytes_of(&0u32), libbpf_rs::MapFlags::ANY).ok()??;
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

/// Builds generation `number` for `cfg`: new maps sized for the blocklist,
/// filled, pinned, made `current`. The links still run the previous
/// generation until the caller repoints them, so nothing is unguarded.
///
/// With `early`, the interfaces that have no link pinned are attached
/// while the maps are filled (see [`attach_early`]); what that did is
/// returned with how long it took.
fn build_generation(
    pins: &PinDir,
    number: u64,
    desired: &Desired<'_>,
    previous: Option<&Maps>,
    early: bool,
) -> Result<(Generation, Duration, Option<Early>)> {
    let (mut gen, fill, early) = fill_new_generation(desired, early.then_some(pins))?;
    if let Some(old) = previous {
        gen.carry_counters_from(old)?;
    }
    let mut meta = types::ig_meta {
        abi_version: abi_version(),
        daemon_pid: std::process::id(),
        generation: number,
        capacity: u64::from(gen.capacity()),
        entries: gen.rules().len() as u32,
        ..Default::default()
    };
    let dir = pins.create_gen_dir(number)?;
    gen.maps.pin(&dir)?;
    gen.pin_programs(&dir, &mut meta)?;
    gen.maps.write_meta(&meta)?;
    pins.set_current(number)?;
    Ok((gen, fill, early))
}

/// A generation holding the desired rules. An unlucky hash seed (an IPv4
/// address with no slot within the probe bound) is retried with another.
fn fill_new_generation(desired: &Desired<'_>, early: Option<&PinDir>) -> Result<(Generation, Duration, Option<Early>)> {
    let mut attached = None;
    for _ in 0..4 {
        let mut gen = Generation::create_sized(Sizes::for_entries(desired.entries(), desired.sources))?;
        // Attached once, by the first try: a later one's programs are
        // swapped into these links by sync_interfaces.
        let progs = match early.filter(|_| attached.is_none()) {
            Some(pins) => {
                let dup = |fd: std::os::fd::BorrowedFd<'_>| {
                    fd.try_clone_to_owned().map_err(|e| Error::kernel_io("duplicating a program", e, ""))
                };
                Some((pins, dup(gen.xdp_fd())?, dup(gen.tcx_fd())?))
            }
            None => None,
        };
        let started = Instant::now();
        let (outcome, early) = std::thread::scope(|s| {
            let attaching = progs.map(|(pins, xdp, tcx)| {
                s.spawn(move || {
                    let started = Instant::now();
                    let (xdp, tcx) = (std::os::fd::AsFd::as_fd(&xdp), std::os::fd::AsFd::as_fd(&tcx));
                    let lines = attach_early(pins, xdp, tcx, &desired.interfaces, desired.mode);
                    Early { attach: started.elapsed(), lines }
                })
            });
            let outcome = gen.set_settings(desired.settings).and_then(|()| gen.apply(&desired.plan(&Rules::default())));
            let fill = started.elapsed();
            (outcome.map(|o| (o, fill)), attaching.and_then(|h| h.join().ok()))
        });
        attached = attached.or(early);
        let (outcome, fill) = outcome?;
        if outcome == Outcome::Applied {
            return Ok((gen, fill, attached));
        }
    }
    Err(Error::Internal {
        what: "cannot place the IPv4 addresses in their table within the probe bound, with four hash seeds".into(),
        hint: "report this bug with the configuration file".into(),
    })
}

/// What attaching during the fill did.
struct Early {
    attach: Duration,
    /// Log lines, for the caller to log.
    lines: Vec<(Level, String)>,
}

/// Attaches the programs to each interface of `interfaces` that exists and
/// has no link pinned (none of this filter's links runs there: nothing is
/// enforced there that a filter still being filled could weaken), and pins
/// the links. On a cold start this runs while the maps are filled: each
/// attach waits in the kernel (an RCU grace period under the RTNL lock)
/// and the wait overlaps the fill; READY=1 still comes after both. Errors
/// are left to [`Filter::sync_interfaces`], which tries again and reports
/// them.
fn attach_early(
    pins: &PinDir,
    xdp: std::os::fd::BorrowedFd<'_>,
    tcx: std::os::fd::BorrowedFd<'_>,
    interfaces: &[String],
    mode: AttachMode,
) -> Vec<(Level, String)> {
    let mut lines = Vec::new();
    for iface in interfaces {
        let Some(ifindex) = links::ifindex(iface) else {
            continue;
        };
        if !pins.iface_links(iface).is_empty() || pins.ensure_iface_dir(iface).is_err() {
            continue;
        }
        let dir = pins.iface_dir(iface);
        let mut done = Vec::new();
        let mut refused: Option<String> = None;
        for &target in links::xdp_targets(mode) {
            match links::attach(xdp, iface, ifindex, target, &dir.join(links::file_name(target))) {
                Ok(_) => {
                    if let Some(why) = refused.take() {
                        lines.push((Level::Notice, format!("{why}; falling back to generic XDP on {iface}")));
                    }
                    done.push(target.to_string());
                    break;
                }
                Err(e) => refused = Some(e.to_string().lines().next().unwrap_or_default().to_string()),
            }
        }
        let target = match probe::facilities().egress() {
            probe::EgressHook::Tcx => LinkTarget::TcxEgress,
            probe::EgressHook::Tc => LinkTarget::TcEgress,
        };
        if links::attach(tcx, iface, ifindex, target, &dir.join(links::file_name(target))).is_ok() {
            done.push(target.to_string());
        }
        if !done.is_empty() {
            lines.push((Level::Info, format!("interface {iface}: attached ({})", done.join(", "))));
        }
    }
    lines
}

/// A link as `status` shows it.
#[derive(Clone, Debug)]
pub struct LinkState {
    pub iface: String,
    pub target: LinkTarget,
    /// The interface's index now, if it exists.
    pub ifindex: Option<u32>,
    pub link_id: u32,
    pub prog_id: u32,
    /// Attached to the interface of that name right now.
    pub attached: bool,
}

/// What the kernel enforces, read from the pin directory.
pub struct Snapshot {
    pub generation: u64,
    pub meta: types::ig_meta,
    pub settings: types::ig_settings,
    pub counters: types::ig_counters,
    /// Per direction (enum ig_direction).
    pub counters_by_direction: [types::ig_counters; 2],
    /// Buckets of the rate limiter.
    pub sources: u32,
    /// Slots of each rule's drop counter, and the possible CPUs that add
    /// to them (fewer slots than CPUs: shared, see sizes.rs drop_slots).
    pub drop_slots: u32,
    pub cpus: u32,
    /// Every rule with whether it allows and its drops, sorted.
    pub rules: Vec<(Prefix, bool, u64)>,
    pub links: Vec<LinkState>,
}

/// Reads the filter pinned at `pin_dir` without changing anything; `None`
/// when nothing is pinned there.
pub fn snapshot(pin_dir: &Path) -> Result<Option<Snapshot>> {
    let Some(pins) = PinDir::open_unlocked(pin_dir)? else {
        return Ok(None);
    };
    let Some((generation, dir)) = pins.current() else {
        return Ok(None);
    };
    let maps = Maps::open_pinned(&dir)?;
    let mut raw: Vec<(Prefix, Rule)> = maps
        .read_rules(generation::abi_constants().v4_len_bits)
        .into_iter()
        .map(|(p, k)| (p, generation::rule_of(k)))
        .collect();
    // A rule whose hint bit is missing is in the maps but never looked
    // at: not enforced.
    let settings = maps.read_settings().unwrap_or_default();
    let lens = PerFamily {
        v4: settings.v4_lens.map(|l| u8::try_from(l).unwrap_or(maps::NO_LEN)),
        v6: settings.v6_lens.map(|l| u8::try_from(l).unwrap_or(maps::NO_LEN)),
    };
    let unhinted = maps.unhinted(raw.iter().map(|(p, r)| (p, r.allow())), &lens)?;
    if !unhinted.is_empty() {
        let skip: std::collections::HashSet<Prefix> = unhinted.into_iter().collect();
        raw.retain(|(p, _)| !skip.contains(p));
    }
    let drops = maps.read_all_drops(raw.iter().filter(|(_, r)| !r.allow()).map(|(_, r)| r.id() + 1).max().unwrap_or(0));
    let mut rules: Vec<(Prefix, bool, u64)> = raw
        .into_iter()
        .map(|(p, r)| (p, r.allow(), if r.allow() { 0 } else { drops.get(r.id() as usize).copied().unwrap_or(0) }))
        .collect();
    rules.sort_unstable();
    let mut links = Vec::new();
    for (iface, files) in pins.pinned_ifaces() {
        let ifindex = links::ifindex(&iface);
        for (file, path) in files {
            let Some(target) = links::target_of(&file) else {
                continue;
            };
            let Ok(link) = PinnedLink::open(&path, target, ifindex) else {
                continue;
            };
            links.push(LinkState {
                iface: iface.clone(),
                target,
                ifindex,
                link_id: link.link_id,
                prog_id: link.prog_id,
                attached: link.ifindex != 0 && Some(link.ifindex) == ifindex,
            });
        }
    }
    let mut meta = maps.read_meta().unwrap_or_default();
    if !pins.daemon_running() {
        // A daemon killed with -9 leaves its pid behind.
        meta.daemon_pid = 0;
    }
    Ok(Some(Snapshot {
        generation,
        meta,
        settings,
        counters: maps.read_counters(),
        counters_by_direction: maps.read_counters_by_direction(),
        sources: maps.limits.max_entries().saturating_mul(generation::LIMIT_WAYS),
        drop_slots: maps.rule_drops.value_size() / 8,
        cpus: sizes::possible_cpus().unwrap_or(0),
        rules,
        links,
    }))
}

/// What `unload` removed.
#[derive(Debug, Default)]
pub struct Unloaded {
    pub links: Vec<(String, LinkTarget)>,
    pub existed: bool,
}

/// Detaches every pinned link and removes the pin directory. Idempotent:
/// nothing pinned is not an error. Refused while a daemon holds the
/// directory.
pub fn unload(pin_dir: &Path) -> Result<Unloaded> {
    let Some(pins) = PinDir::lock_existing(pin_dir, holder_pid)? else {
        return Ok(Unloaded::default());
    };
    let mut out = Unloaded { existed: true, ..Default::default() };
    for (iface, files) in pins.pinned_ifaces() {
        let mut failure = None;
        let detached = links::remove_iface_pins(&iface, &files, |path, e| {
            failure.get_or_insert_with(|| Error::kernel_io(format!("removing {}", path.display()), e, "run as root"));
        });
        out.links.extend(detached.into_iter().map(|t| (iface.clone(), t)));
        if let Some(e) = failure {
            return Err(e);
        }
    }
    pins.remove_all().map_err(|e| Error::kernel_io(format!("removing {}", pin_dir.display()), e, "run as root"))?;
    Ok(out)
}
