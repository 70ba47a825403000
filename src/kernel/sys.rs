//! The one place with `unsafe`: byte views of the ABI types generated from
//! bpf/icmpguard.h, and the few libbpf calls that libbpf-rs does not wrap
//! for plain file descriptors (links in generic XDP mode and tcx, link
//! update by fd, pinning by fd, BPF_PROG_TEST_RUN by fd, tc filters by
//! handle, and the kernel probes).

use std::ffi::CString;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::skel::types;

/// Plain old data: every bit pattern is a valid value and there is no
/// padding, so the value can be viewed as bytes and rebuilt from bytes.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` types made of integers and integer
/// arrays whose fields leave no padding (checked by the size assertions
/// below).
pub unsafe trait Plain: Copy + Default {}

// SAFETY: integers.
unsafe impl Plain for u32 {}
// SAFETY: integers.
unsafe impl Plain for u64 {}
// SAFETY: two u32, no padding (size asserted below).
unsafe impl Plain for types::ig_rule {}
// SAFETY: u32 + [u8; 4]-sized u32, no padding.
unsafe impl Plain for types::ig_v4_lpm_key {}
// SAFETY: u32 + [u8; 16], alignment 4, size 20, no padding.
unsafe impl Plain for types::ig_v6_lpm_key {}
// SAFETY: [u8; 16] and two u32, no padding (size asserted below).
unsafe impl Plain for types::ig_v6_slot {}
// SAFETY: 32 u32 then two u64, no padding (size asserted below).
unsafe impl Plain for types::ig_settings {}
// SAFETY: seven u64, no padding.
unsafe impl Plain for types::ig_counters {}
// SAFETY: IG_LIMIT_WAYS pairs of u64, no padding (size asserted below).
unsafe impl Plain for types::ig_limit_set {}
// SAFETY: one u64.
unsafe impl Plain for types::ig_budget {}
// SAFETY: integers laid out without padding (size asserted below).
unsafe impl Plain for types::ig_meta {}
// SAFETY: integers and byte arrays without padding (size asserted below).
unsafe impl Plain for types::ig_event {}

// The generated layouts must be the packed sums of their fields, which is
// what makes the `Plain` impls above sound.
const _: () = assert!(size_of::<types::ig_rule>() == 8);
const _: () = assert!(size_of::<types::ig_v4_lpm_key>() == 8);
const _: () = assert!(size_of::<types::ig_v6_lpm_key>() == 20);
const _: () = assert!(size_of::<types::ig_v6_slot>() == 24);
const _: () = assert!(size_of::<types::ig_settings>() == 160);
const _: () = assert!(size_of::<types::ig_v4_slot>() == 8);
const _: () = assert!(size_of::<types::ig_counters>() == 56);
const _: () = assert!(size_of::<types::ig_limit_set>() == 16 * types::ig_abi::IG_LIMIT_WAYS.0 as usize);
const _: () = assert!(size_of::<types::ig_budget>() == 8);
const _: () = assert!(size_of::<types::ig_meta>() == 96);
const _: () = assert!(size_of::<types::ig_event>() == 56);

/// The bytes of a value, as the kernel expects a key or value.
pub fn bytes_of<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so all `size_of::<T>()` bytes are
    // initialised; the slice borrows `v` and cannot outlive it.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A value rebuilt from bytes the kernel returned; `None` when the length is
/// not the type's size.
pub fn from_bytes<T: Plain>(b: &[u8]) -> Option<T> {
    if b.len() != size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked, every bit pattern is valid for a
    // `Plain` type, and `read_unaligned` has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// libbpf returns a negative errno (libbpf 1.0 mode).
fn check(ret: i32) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

/// What a link attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkTarget {
    XdpNative,
    XdpGeneric,
    TcxEgress,
    /// A tc filter on the clsact qdisc (kernels before 6.6): no link, but
    /// it is kept in the same places.
    TcEgress,
}

impl LinkTarget {
    pub fn is_egress(self) -> bool {
        matches!(self, LinkTarget::TcxEgress | LinkTarget::TcEgress)
    }
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// BPF_LINK_CREATE for `prog` on interface `ifindex`.
pub fn link_create(prog: BorrowedFd<'_>, ifindex: u32, target: LinkTarget) -> io::Result<OwnedFd> {
    // SAFETY: bpf_link_create_opts is plain C data for which all-zero is the
    // documented "no options" value; `sz` is set as libbpf requires.
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { MaybeUninit::zeroed().assume_init() };
    opts.sz = size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    let attach = match target {
        LinkTarget::XdpNative => {
            opts.flags = XDP_FLAGS_DRV_MODE;
            libbpf_sys::BPF_XDP
        }
        LinkTarget::XdpGeneric => {
            opts.flags = XDP_FLAGS_SKB_MODE;
            libbpf_sys::BPF_XDP
        }
        LinkTarget::TcxEgress => libbpf_sys::BPF_TCX_EGRESS,
        LinkTarget::TcEgress => return Err(io::Error::from_raw_os_error(nix::errno::Errno::EINVAL as i32)),
    };
    // SAFETY: `prog` is a valid program fd for the duration of the call and
    // `opts` lives on the stack until it returns.
    let fd = check(unsafe { libbpf_sys::bpf_link_create(prog.as_raw_fd(), ifindex as i32, attach, &opts) })?;
    // SAFETY: on success the call returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Atomically replaces the program of an attached link.
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both fds are valid for the call; NULL opts means no flags.
    check(unsafe { libbpf_sys::bpf_link_update(link.as_raw_fd(), prog.as_raw_fd(), std::ptr::null()) })?;
    Ok(())
}

/// Detaches a link from its hook; the link object stays until closed.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `link` is a valid fd for the call.
    check(unsafe { libbpf_sys::bpf_link_detach(link.as_raw_fd()) })?;
    Ok(())
}

/// Pins any BPF object fd at `path` on a bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `fd` is valid and `c` is a NUL-terminated string that lives
    // until the call returns.
    check(unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

/// Opens a pinned BPF object.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: `c` is a NUL-terminated string that lives until the call returns.
    let fd = check(unsafe { libbpf_sys::bpf_obj_get(c.as_ptr()) })?;
    // SAFETY: on success the call returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's id of a loaded program (what `bpftool prog` shows).
pub fn prog_id(prog: BorrowedFd<'_>) -> io::Result<u32> {
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a writable bpf_prog_info of `len` bytes and all of
    // its pointer fields are NULL, so the kernel writes only into it.
    check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) })?;
    Ok(info.id)
}

/// The epoll descriptor libbpf keeps for a ring buffer, to wait on it
/// together with other descriptors.
pub fn ring_fd<'a>(ring: &'a libbpf_rs::RingBuffer<'_>) -> BorrowedFd<'a> {
    // SAFETY: libbpf owns this epoll fd and closes it only in
    // ring_buffer__free, which runs when `ring` is dropped; the returned
    // borrow cannot outlive `ring`.
    unsafe { BorrowedFd::borrow_raw(ring.epoll_fd()) }
}

/// Whether XDP programs may call `helper` on this kernel (libbpf loads a
/// tiny program that calls it). `Err` when the probe itself failed.
pub fn probe_xdp_helper(helper: libbpf_sys::bpf_func_id) -> io::Result<bool> {
    // SAFETY: plain integers in; NULL opts is documented as "no options".
    let ret = unsafe { libbpf_sys::libbpf_probe_bpf_helper(libbpf_sys::BPF_PROG_TYPE_XDP, helper, std::ptr::null()) };
    check(ret).map(|r| r == 1)
}

/// One BPF instruction.
fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> libbpf_sys::bpf_insn {
    let mut i = libbpf_sys::bpf_insn { code: code as u8, off, imm, ..Default::default() };
    i.set_dst_reg(dst);
    i.set_src_reg(src);
    i
}

/// Whether the kernel's verifier takes BPF's compare-and-swap (5.12+):
/// loads an XDP program that does one on its stack. Kernels before 5.12
/// answer EINVAL (an atomic instruction with a reserved field set).
pub fn probe_atomics() -> io::Result<bool> {
    use libbpf_sys::{BPF_ALU64, BPF_ATOMIC, BPF_CMPXCHG, BPF_DW, BPF_EXIT, BPF_JMP, BPF_K, BPF_MEM, BPF_MOV, BPF_STX};
    const R0: u8 = 0;
    const R1: u8 = 1;
    const FP: u8 = 10;
    let prog = [
        // *(u64 *)(fp - 8) = r1 = 0
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R1, 0, 0, 0),
        insn(BPF_STX | BPF_MEM | BPF_DW, FP, R1, -8, 0),
        // r0 = cmpxchg(fp - 8, r0 = 0, r1 = 1)
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, 0),
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R1, 0, 0, 1),
        insn(BPF_STX | BPF_ATOMIC | BPF_DW, FP, R1, -8, BPF_CMPXCHG as i32),
        // return XDP_PASS
        insn(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, libbpf_sys::XDP_PASS as i32),
        insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ];
    // SAFETY: the name and license are NUL-terminated literals, `prog`
    // lives until the call returns and holds `prog.len()` instructions,
    // NULL opts is documented as "no options"; on success the fd is new
    // and ours.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"ig_probe_cas".as_ptr(),
            c"GPL".as_ptr(),
            prog.as_ptr(),
            prog.len() as _,
            std::ptr::null_mut(),
        )
    };
    if let Ok(fd) = check(fd) {
        // SAFETY: as above: a new fd nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    supported(fd)
}

/// Whether the kernel knows the tcx egress hook: BPF_PROG_QUERY for it on
/// the loopback interface (index 1 in every network namespace), which
/// changes nothing. Kernels before 6.6 answer EINVAL.
pub fn probe_tcx() -> io::Result<bool> {
    let mut count: u32 = 0;
    // SAFETY: the out pointers are NULL or point at `count`, which lives
    // until the call returns; NULL prog_ids asks for the count only.
    let ret = unsafe {
        libbpf_sys::bpf_prog_query(
            1,
            libbpf_sys::BPF_TCX_EGRESS,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut count,
        )
    };
    supported(ret)
}

/// A probe's answer: success is yes, EINVAL (what older kernels say to
/// what they do not know) is no, any other error is the probe failing.
fn supported(ret: i32) -> io::Result<bool> {
    match check(ret) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The name the kernel holds for program `id` (at most 15 bytes).
pub fn prog_name_by_id(id: u32) -> io::Result<String> {
    // SAFETY: plain integer in; on success a new fd nothing else owns.
    let fd = check(unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) })?;
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: as in `prog_id`.
    check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
    let bytes: Vec<u8> = info.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A tc filter slot: the clsact egress hook of an interface, at one
/// handle and priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcSlot {
    pub ifindex: u32,
    pub handle: u32,
    pub priority: u32,
}

fn tc_hook(ifindex: u32, attach_point: libbpf_sys::bpf_tc_attach_point) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex: ifindex as i32,
        attach_point,
        ..Default::default()
    }
}

fn tc_opts(slot: TcSlot) -> libbpf_sys::bpf_tc_opts {
    libbpf_sys::bpf_tc_opts {
        sz: size_of::<libbpf_sys::bpf_tc_opts>() as _,
        handle: slot.handle,
        priority: slot.priority,
        ..Default::default()
    }
}

/// Adds a clsact qdisc to the interface; `Ok(false)` when it had one.
pub fn tc_clsact_create(ifindex: u32) -> io::Result<bool> {
    let mut hook = tc_hook(ifindex, libbpf_sys::BPF_TC_EGRESS);
    // SAFETY: `hook` is a valid, sized bpf_tc_hook for the call.
    match check(unsafe { libbpf_sys::bpf_tc_hook_create(&mut hook) }) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the interface's clsact qdisc, with every filter on it.
pub fn tc_clsact_destroy(ifindex: u32) -> io::Result<()> {
    let mut hook = tc_hook(ifindex, libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS);
    // SAFETY: `hook` is a valid, sized bpf_tc_hook for the call.
    check(unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut hook) })?;
    Ok(())
}

/// Puts `prog` (direct action) in `slot`; with `replace`, atomically in
/// place of the filter there.
pub fn tc_attach(slot: TcSlot, prog: BorrowedFd<'_>, replace: bool) -> io::Result<()> {
    let hook = tc_hook(slot.ifindex, libbpf_sys::BPF_TC_EGRESS);
    let mut opts = tc_opts(slot);
    opts.prog_fd = prog.as_raw_fd();
    opts.flags = if replace { libbpf_sys::BPF_TC_F_REPLACE } else { 0 };
    // SAFETY: `hook` and `opts` are valid, sized structs that live until
    // the call returns; `prog` is a valid fd for the call.
    check(unsafe { libbpf_sys::bpf_tc_attach(&hook, &mut opts) })?;
    Ok(())
}

/// The id of the program in `slot`; `None` when the slot is empty (or the
/// interface has no clsact qdisc).
pub fn tc_query(slot: TcSlot) -> io::Result<Option<u32>> {
    let hook = tc_hook(slot.ifindex, libbpf_sys::BPF_TC_EGRESS);
    let mut opts = tc_opts(slot);
    // SAFETY: as in `tc_attach`; the kernel's answer is written into `opts`.
    match check(unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) }) {
        Ok(_) => Ok(Some(opts.prog_id)),
        // No filter there (ENOENT), or no clsact qdisc to look in (EINVAL).
        Err(e)
            if [nix::errno::Errno::ENOENT, nix::errno::Errno::EINVAL]
                .iter()
                .any(|n| e.raw_os_error() == Some(*n as i32)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Removes the filter in `slot`.
pub fn tc_detach(slot: TcSlot) -> io::Result<()> {
    let hook = tc_hook(slot.ifindex, libbpf_sys::BPF_TC_EGRESS);
    let opts = tc_opts(slot);
    // SAFETY: as in `tc_attach`.
    check(unsafe { libbpf_sys::bpf_tc_detach(&hook, &opts) })?;
    Ok(())
}

/// A memory-mapped BPF array (BPF_F_MMAPABLE), seen as 8-byte words that
/// the programs read concurrently.
pub struct Mapping {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    words: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` hands out only `&[AtomicU64]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the `words` 8-byte values of an mmapable array map.
    pub fn map(fd: BorrowedFd<'_>, words: usize) -> io::Result<Mapping> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let len = std::num::NonZeroUsize::new(words * 8)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty map"))?;
        // SAFETY: a fresh shared mapping of the map's own memory (the
        // kernel checks the length against the map); nothing else in this
        // process aliases it, and it is unmapped in Drop.
        let ptr = unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, fd, 0) }
            .map_err(io::Error::from)?;
        Ok(Mapping { ptr, words })
    }

    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping is `words * 8` bytes, page-aligned (so 8-byte
        // aligned), valid until Drop, and shared with the kernel: atomics
        // are the right way to access memory others write concurrently.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.words) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and the length are those returned by mmap; no
        // borrow of `words()` outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.words * 8) };
    }
}

/// Gives the free pages of the heap back to the system (glibc's
/// malloc_trim): after a parse of millions of entries, what was freed in
/// blocks below malloc's mmap threshold would otherwise stay in the
/// daemon's RSS until reused.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it only returns free memory of
    // the allocator's own arenas to the kernel, under the allocator's lock.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    pub retval: u32,
    /// Average nanoseconds per repetition, as the kernel reports it.
    pub duration_ns: u32,
}

/// Runs `prog` on `packet` `repeat` times in the kernel (BPF_PROG_TEST_RUN).
pub fn prog_test_run(prog: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; packet.len() + 256];
    // SAFETY: bpf_test_run_opts is plain C data for which all-zero means "no
    // options"; `sz` is set as libbpf requires.
    let mut opts: libbpf_sys::bpf_test_run_opts = unsafe { MaybeUninit::zeroed().assume_init() };
    opts.sz = size_of::<libbpf_sys::bpf_test_run_opts>() as _;
    opts.data_in = packet.as_ptr().cast();
    opts.data_size_in = packet.len() as u32;
    opts.data_out = out.as_mut_ptr().cast();
    opts.data_size_out = out.len() as u32;
    opts.repeat = repeat as _;
    // SAFETY: the in and out buffers outlive the call and their sizes are
    // the ones given in `opts`.
    check(unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) })?;
    Ok(TestRun { retval: opts.retval, duration_ns: opts.duration })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let r = types::ig_rule { id: 7, prefixlen: 24 };
        let b = bytes_of(&r).to_vec();
        assert_eq!(b.len(), 8);
        let back: types::ig_rule = from_bytes(&b).unwrap();
        assert_eq!((back.id, back.prefixlen), (7, 24));
        assert!(from_bytes::<types::ig_rule>(&b[..7]).is_none());
    }
}
