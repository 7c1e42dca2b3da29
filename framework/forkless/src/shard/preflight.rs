//! Preflight: check the machine before any shard starts, so that a host
//! without usable io_uring, or with too little lockable memory, fails with
//! one line that says what is missing and how to fix it, instead of a panic
//! or a backtrace from deep inside an executor.
//!
//! Contract:
//!
//! - [`check_io_uring`] asks the kernel directly: it creates (and at once
//!   closes) a 4-entry ring with `io_uring_setup`, and only when that fails
//!   reads the `kernel.io_uring_disabled` / `kernel.io_uring_group` sysctls
//!   to explain why. It never panics. A seccomp profile whose action kills
//!   the process (rather than returning an errno) kills it here, as it would
//!   a moment later in the executor.
//! - [`io_memory_per_shard`] is a pure function of the shard count and the
//!   limits; [`memlock_limit`] and [`has_ipc_lock`] are the thin shell that
//!   reads those limits.
//! - Classification (errno and sysctl to [`PreflightError`]) and parsing
//!   (`/proc/self/status`, `/proc/self/uid_map`) are pure and tested with
//!   literal inputs.
//!
//! How locked memory is charged, which the sizing below follows:
//!
//! - glommio gives each executor an `io_memory` arena for storage DMA and
//!   registers it with all three of the executor's rings (main, latency,
//!   poll). The kernel charges every registration separately against
//!   `RLIMIT_MEMLOCK`, so one shard pins `3 × io_memory` of the limit.
//! - The rings themselves are charged too (they were before Linux 5.12, and
//!   are again on 6.18): 16 KiB for each of glommio's 128-entry rings.
//! - Measured on Linux 6.18 with glommio executors at an 8 MiB limit: one
//!   shard takes `3 × io_memory + 48 KiB`, so 18 shards of 128 KiB fit and a
//!   19th registration fails; 4 shards of 576 KiB fit, of 1 MiB do not.
//! - The charge goes to the *user*, not the process: every process of the
//!   same uid shares one limit. A second forkless during a handover counts,
//!   and so does one that just exited: the kernel tears rings down
//!   asynchronously, so an immediate restart can briefly find the old
//!   charge still there. The headroom absorbs some of this, not all.
//! - `CAP_IPC_LOCK` exempts a process, but only when held in the initial user
//!   namespace: `root` in a rootless container shows the capability and is
//!   still charged.
//! - glommio refuses to start an executor at all when the soft limit is below
//!   512 KiB, capability or not. A registration that does not fit is not
//!   fatal to glommio (it logs and falls back to unregistered buffers), but
//!   forkless sizes the arena so that it does fit.

use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The smallest arena [`io_memory_per_shard`] shrinks to: 128 KiB, twice
/// glommio's own floor, room for a few DMA buffers. A limit that cannot
/// give every shard this much is the problem to report, not to work around.
pub(crate) const MIN_IO_MEMORY: usize = 128 << 10;

/// Shrunk arenas are multiples of 64 KiB, the largest common page size
/// (arm64, ppc64), so the kernel charges exactly what was computed.
const IO_MEMORY_STEP: u64 = 64 << 10;

/// glommio registers the arena with each of an executor's three rings.
const RINGS_PER_SHARD: u64 = 3;

/// What one shard's rings take from the limit: three rings of glommio's
/// default depth (128 entries, which forkless keeps) at 16 KiB each, 8 KiB
/// of submission entries and 8 KiB of completion ring. Measured, not
/// derived: update it if the ring depth changes.
const RINGS_CHARGE_PER_SHARD: u64 = RINGS_PER_SHARD * (16 << 10);

/// Locked memory left for anything else (the preflight's own probe ring,
/// whose teardown is asynchronous; another forkless of the same user
/// briefly overlapping) when the limit allows it...
const HEADROOM: u64 = 1 << 20;

/// ...and the least left when it does not.
const MIN_HEADROOM: u64 = 128 << 10;

/// glommio's `Reactor::new` fails below this soft memlock limit.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 << 10;

/// `CAP_IPC_LOCK`'s bit in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// What the machine lacks, with how to fix it in the [`fmt::Display`] text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PreflightError {
    /// `kernel.io_uring_disabled = 2`: io_uring is off for every process.
    Disabled,
    /// `kernel.io_uring_disabled = 1` and this process is neither in
    /// `group` (`kernel.io_uring_group`, `None` when unset) nor
    /// `CAP_SYS_ADMIN`.
    Restricted { group: Option<u32> },
    /// `io_uring_setup` returned `ENOSYS`: no io_uring in this kernel, or a
    /// sandbox pretending so.
    Unsupported,
    /// `io_uring_setup` returned `errno` (`EPERM` or `EACCES`) although the
    /// sysctl allows it: a seccomp profile, most likely.
    Blocked { errno: i32 },
    /// `io_uring_setup` failed with another `errno`.
    SetupFailed { errno: i32 },
    /// The memlock limit (bytes) cannot hold `shards` minimal arenas; it
    /// needs to be at least `needed` bytes.
    MemlockTooLow {
        limit: u64,
        needed: u64,
        shards: usize,
    },
}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALLOW: &str = "allow io_uring_setup, io_uring_enter and io_uring_register";
        match *self {
            PreflightError::Disabled => write!(
                f,
                "io_uring is disabled on this host (sysctl kernel.io_uring_disabled=2); forkless \
                 needs it: run `sysctl -w kernel.io_uring_disabled=0`"
            ),
            PreflightError::Restricted { group: Some(gid) } => write!(
                f,
                "io_uring is restricted on this host to CAP_SYS_ADMIN and group {gid} (sysctl \
                 kernel.io_uring_disabled=1, kernel.io_uring_group={gid}); forkless needs it: run \
                 it as a member of group {gid}, or run `sysctl -w kernel.io_uring_disabled=0`"
            ),
            PreflightError::Restricted { group: None } => write!(
                f,
                "io_uring is restricted on this host to CAP_SYS_ADMIN (sysctl \
                 kernel.io_uring_disabled=1, no kernel.io_uring_group); forkless needs it: run \
                 `sysctl -w kernel.io_uring_disabled=0`, or set kernel.io_uring_group to a group \
                 it runs in"
            ),
            PreflightError::Unsupported => write!(
                f,
                "this kernel has no io_uring (io_uring_setup: ENOSYS); forkless needs Linux >= \
                 5.8 built with CONFIG_IO_URING: upgrade the kernel, or if a sandbox or seccomp \
                 filter answers ENOSYS, {ALLOW}"
            ),
            PreflightError::Blocked { errno } => write!(
                f,
                "io_uring_setup was refused ({}) although kernel.io_uring_disabled allows it, most \
                 likely by a seccomp profile (the Docker and containerd default profiles block \
                 io_uring); forkless needs it: {ALLOW}, e.g. `docker run --security-opt \
                 seccomp=<profile allowing them>`, a Localhost seccompProfile in Kubernetes, or \
                 SystemCallFilter= in a systemd unit",
                errno_name(errno)
            ),
            PreflightError::SetupFailed { errno } => {
                write!(
                    f,
                    "io_uring_setup failed: {}; forkless needs io_uring",
                    io::Error::from_raw_os_error(errno)
                )?;
                if errno == libc::ENOMEM {
                    write!(
                        f,
                        " (io_uring rings count against the memlock limit: raise it with \
                         `ulimit -l`)"
                    )?;
                }
                Ok(())
            }
            PreflightError::MemlockTooLow {
                limit,
                needed,
                shards,
            } => {
                write!(
                    f,
                    "memlock limit {} is too low for {shards} shard{} (need at least {}): raise \
                     it with `ulimit -l`, LimitMEMLOCK= in the systemd unit or `docker run \
                     --ulimit memlock=`",
                    size(limit),
                    if shards == 1 { "" } else { "s" },
                    size(needed)
                )?;
                if limit >= GLOMMIO_MIN_MEMLOCK {
                    write!(f, ", grant it CAP_IPC_LOCK")?;
                }
                let fitting = shards_that_fit(limit);
                if (1..shards).contains(&fitting) {
                    write!(f, ", or run fewer shards (--shards {fitting})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PreflightError {}

/// Checks that this process can create an io_uring.
pub(crate) fn check_io_uring() -> Result<(), PreflightError> {
    let probe = probe_io_uring_setup();
    if probe.is_ok() {
        return Ok(());
    }
    let disabled = read_sysctl("/proc/sys/kernel/io_uring_disabled");
    let group = read_sysctl("/proc/sys/kernel/io_uring_group");
    classify_io_uring(probe, disabled, group)
}

/// The `io_memory` for each of `shards` executors so that all their
/// registrations plus headroom fit within the memlock `limit` (bytes,
/// `None` = unlimited), given whether this process has an effective
/// `CAP_IPC_LOCK` (which lifts the limit, except glommio's own 512 KiB
/// floor).
///
/// `wanted` is returned as it is when it fits. Otherwise the arena shrinks
/// to the largest multiple of 64 KiB that fits, but not below
/// [`MIN_IO_MEMORY`]; when even that does not fit, the error names the limit
/// that would. Headroom is 1 MiB when the limit has room for it beyond the
/// minimal arenas, otherwise what is left, but at least 128 KiB. A larger
/// limit never yields a smaller arena.
pub(crate) fn io_memory_per_shard(
    shards: usize,
    wanted: usize,
    limit: Option<u64>,
    ipc_lock: bool,
) -> Result<usize, PreflightError> {
    let Some(limit) = limit else {
        return Ok(wanted);
    };
    // With CAP_IPC_LOCK nothing is charged, but glommio still checks.
    let needed = if ipc_lock {
        GLOMMIO_MIN_MEMLOCK
    } else {
        needed_for(shards)
    };
    if limit < needed {
        // Below glommio's own floor nothing starts. Above it, the shards that
        // cannot register their arena run with unregistered buffers (glommio
        // falls back by itself; only file I/O gets slower), which beats
        // refusing to start: the coordinator warns with `shards_that_fit`.
        if limit < GLOMMIO_MIN_MEMLOCK {
            return Err(PreflightError::MemlockTooLow {
                limit,
                needed,
                shards,
            });
        }
        return Ok(MIN_IO_MEMORY);
    }
    if ipc_lock {
        return Ok(wanted);
    }
    let shards = to_u64(shards.max(1));
    let registrations = shards.saturating_mul(RINGS_PER_SHARD);
    let rings = shards.saturating_mul(RINGS_CHARGE_PER_SHARD);
    let minimum = registrations
        .saturating_mul(to_u64(MIN_IO_MEMORY))
        .saturating_add(rings);
    // `limit >= minimum + MIN_HEADROOM` from here on.
    let headroom = limit.saturating_sub(minimum).min(HEADROOM);
    let per_registration = limit.saturating_sub(headroom).saturating_sub(rings) / registrations;
    if charged(wanted) <= per_registration {
        return Ok(wanted);
    }
    let shrunk = per_registration / IO_MEMORY_STEP * IO_MEMORY_STEP;
    Ok(usize::try_from(shrunk).map_or(MIN_IO_MEMORY, |s| s.max(MIN_IO_MEMORY)))
}

/// The smallest memlock limit (bytes) that runs `shards` shards.
fn needed_for(shards: usize) -> u64 {
    to_u64(shards.max(1))
        .saturating_mul(MIN_PER_SHARD)
        .saturating_add(MIN_HEADROOM)
        .max(GLOMMIO_MIN_MEMLOCK)
}

/// What one shard locks at the smallest arena.
const MIN_PER_SHARD: u64 = RINGS_PER_SHARD * MIN_IO_MEMORY as u64 + RINGS_CHARGE_PER_SHARD;

/// The most shards (0 if none) a memlock `limit` (bytes) runs with
/// registered arenas.
pub(crate) fn shards_that_fit(limit: u64) -> usize {
    if limit < GLOMMIO_MIN_MEMLOCK {
        return 0;
    }
    let shards = limit.saturating_sub(MIN_HEADROOM) / MIN_PER_SHARD;
    usize::try_from(shards).unwrap_or(usize::MAX)
}

/// What glommio actually allocates and registers for an `io_memory` of
/// `bytes`: rounded up to 4 KiB, at least 64 KiB.
fn charged(bytes: usize) -> u64 {
    to_u64(bytes)
        .div_ceil(4096)
        .saturating_mul(4096)
        .max(64 << 10)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited (or, should
/// `getrlimit` fail, unknown: glommio will then report it itself).
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `struct rlimit` through the pointer,
    // which points at a live, writable `libc::rlimit` on this stack frame.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Whether the kernel will exempt this process's registered buffers from the
/// memlock limit: `CAP_IPC_LOCK` in the effective set, in the initial user
/// namespace. `false` when unsure.
pub(crate) fn has_ipc_lock() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let in_initial_namespace = std::fs::read_to_string("/proc/self/uid_map")
        .map_or(true, |uid_map| is_initial_user_namespace(&uid_map));
    in_initial_namespace
        && parse_cap_eff(&status).is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The effective capability set from `/proc/self/status` (`CapEff:` in hex).
fn parse_cap_eff(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let hex = line.strip_prefix("CapEff:")?.trim();
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Whether `/proc/self/uid_map` is the identity map of the initial user
/// namespace, `0 0 4294967295`, the only namespace in which the kernel
/// honours `CAP_IPC_LOCK` for io_uring.
fn is_initial_user_namespace(uid_map: &str) -> bool {
    let mut lines = uid_map.lines().filter(|line| !line.trim().is_empty());
    let Some(line) = lines.next() else {
        return false;
    };
    let fields: Vec<&str> = line.split_whitespace().collect();
    lines.next().is_none() && fields == ["0", "0", "4294967295"]
}

/// Turns the probe result and the sysctls into a verdict. `probe` is `Ok`
/// or the `errno` of `io_uring_setup`; `disabled` and `group` are
/// `kernel.io_uring_disabled` and `kernel.io_uring_group` (`None` when
/// absent, as before Linux 6.6, or unreadable).
fn classify_io_uring(
    probe: Result<(), i32>,
    disabled: Option<i64>,
    group: Option<i64>,
) -> Result<(), PreflightError> {
    let Err(errno) = probe else {
        return Ok(());
    };
    Err(match errno {
        libc::ENOSYS => PreflightError::Unsupported,
        libc::EPERM | libc::EACCES => match disabled {
            Some(2) => PreflightError::Disabled,
            Some(1) => PreflightError::Restricted {
                // -1 (the default) means no group is allowed.
                group: group.and_then(|g| u32::try_from(g).ok()),
            },
            _ => PreflightError::Blocked { errno },
        },
        _ => PreflightError::SetupFailed { errno },
    })
}

/// Sets up a 4-entry io_uring and closes it at once: `Ok`, or the errno.
fn probe_io_uring_setup() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes, 8-byte aligned (it ends in two
    // 40-byte offset structs holding a u64 each); all zeroes asks for no
    // flags and no features.
    let mut params = [0u64; 15];
    let entries: libc::c_uint = 4;
    // SAFETY: io_uring_setup(2) reads and then writes exactly one struct
    // io_uring_params through the pointer; `params` is a live, writable,
    // 8-aligned buffer of that size for the whole call. The call creates a
    // new fd and touches no other memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, params.as_mut_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if let Ok(fd) = RawFd::try_from(ret) {
        // SAFETY: the kernel just returned `fd` as a new descriptor owned by
        // nothing else; OwnedFd closes it when dropped here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(())
}

/// A sysctl holding one integer, `None` when absent or unreadable.
fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".to_owned(),
        libc::EACCES => "EACCES".to_owned(),
        libc::ENOSYS => "ENOSYS".to_owned(),
        other => format!("errno {other}"),
    }
}

/// `bytes` for a person: whole MiB when exact, else KiB (the unit of
/// `ulimit -l`), else bytes.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_IO_MEMORY;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    /// Whether `io_memory` for `shards` shards fits in `limit` with at least
    /// the minimal headroom, as the kernel charges it.
    fn fits(shards: usize, io_memory: usize, limit: u64) -> bool {
        let per_shard = RINGS_PER_SHARD * charged(io_memory) + RINGS_CHARGE_PER_SHARD;
        let locked = to_u64(shards) * per_shard;
        limit >= GLOMMIO_MIN_MEMLOCK && locked + MIN_HEADROOM <= limit
    }

    /// The arena asked for when these sizes were measured.
    const MIB_ARENA: usize = 1 << 20;

    #[test]
    fn the_default_arena_fits_8_shards_in_8_mib_untouched() {
        let limit = Some(8 * MIB);
        for shards in [1, 2, 4, 8] {
            let size = io_memory_per_shard(shards, DEFAULT_IO_MEMORY, limit, false);
            assert_eq!(size, Ok(DEFAULT_IO_MEMORY), "{shards} shards");
        }
    }

    #[test]
    fn an_8_mib_limit_runs_2_4_and_16_shards() {
        let limit = Some(8 * MIB);
        let two = io_memory_per_shard(2, MIB_ARENA, limit, false);
        assert_eq!(two, Ok(MIB_ARENA), "1 MiB fits 2 shards untouched");
        let four = io_memory_per_shard(4, MIB_ARENA, limit, false);
        assert_eq!(four, Ok(576 << 10));
        let sixteen = io_memory_per_shard(16, MIB_ARENA, limit, false);
        assert_eq!(sixteen, Ok(MIN_IO_MEMORY));
        for (shards, result) in [(2, two), (4, four), (16, sixteen)] {
            let size = result.unwrap_or(0);
            assert!(size >= MIN_IO_MEMORY && to_u64(size).is_multiple_of(IO_MEMORY_STEP));
            assert!(fits(shards, size, 8 * MIB), "{shards} shards x {size}");
        }
    }

    /// Each size here was run as real glommio executors, alive together,
    /// without CAP_IPC_LOCK under an 8 MiB limit on Linux 6.18: all
    /// registered their arenas, and a 19th shard of 128 KiB did not.
    #[test]
    fn sizes_match_what_glommio_was_measured_to_register() {
        let limit = Some(8 * MIB);
        for (shards, expected) in [
            (2, Ok(1 << 20)),
            (4, Ok(576 << 10)),
            (6, Ok(320 << 10)),
            (8, Ok(256 << 10)),
            (16, Ok(128 << 10)),
            (18, Ok(128 << 10)),
        ] {
            let size = io_memory_per_shard(shards, MIB_ARENA, limit, false);
            assert_eq!(size, expected, "{shards} shards");
        }
        // Past what registers, the smallest arena: some shards run unregistered.
        let nineteen = io_memory_per_shard(19, MIB_ARENA, limit, false);
        assert_eq!(nineteen, Ok(MIN_IO_MEMORY));
        assert_eq!(shards_that_fit(8 * MIB), 18);
    }

    #[test]
    fn a_limit_below_glommios_floor_is_an_error_naming_what_is_needed() {
        let err = io_memory_per_shard(32, DEFAULT_IO_MEMORY, Some(256 * KIB), false);
        assert_eq!(
            err,
            Err(PreflightError::MemlockTooLow {
                limit: 256 * KIB,
                needed: 32 * (3 * 128 + 48) * KIB + 128 * KIB,
                shards: 32,
            })
        );
        assert_eq!(
            io_memory_per_shard(32, DEFAULT_IO_MEMORY, Some(8 * MIB), false),
            Ok(MIN_IO_MEMORY)
        );
    }

    #[test]
    fn unlimited_or_ipc_lock_keeps_what_was_wanted() {
        assert_eq!(io_memory_per_shard(64, 10 << 20, None, false), Ok(10 << 20));
        assert_eq!(
            io_memory_per_shard(64, 10 << 20, Some(8 * MIB), true),
            Ok(10 << 20)
        );
        assert_eq!(
            io_memory_per_shard(1, 12345, Some(8 * MIB), false),
            Ok(12345)
        );
    }

    #[test]
    fn ipc_lock_does_not_lift_glommios_own_floor() {
        let err = io_memory_per_shard(1, DEFAULT_IO_MEMORY, Some(256 * KIB), true);
        assert!(
            matches!(err, Err(PreflightError::MemlockTooLow { needed, .. })
            if needed == GLOMMIO_MIN_MEMLOCK)
        );
    }

    #[test]
    fn every_limit_gives_a_fitting_size_or_the_limit_that_would() {
        for shards in [1, 2, 3, 4, 7, 16, 64] {
            let mut previous = 0;
            for step in 0..=256 {
                let limit = step * 64 * KIB;
                match io_memory_per_shard(shards, DEFAULT_IO_MEMORY, Some(limit), false) {
                    Ok(size) => {
                        assert!(size >= MIN_IO_MEMORY, "{shards} shards, {limit}: {size}");
                        assert!(
                            size == DEFAULT_IO_MEMORY
                                || to_u64(size).is_multiple_of(IO_MEMORY_STEP)
                        );
                        assert!(
                            fits(shards, size, limit)
                                || (size == MIN_IO_MEMORY && limit < needed_for(shards)),
                            "{shards} shards, {limit}: {size}"
                        );
                        assert!(size >= previous, "a larger limit never shrinks the arena");
                        previous = size;
                    }
                    Err(PreflightError::MemlockTooLow { needed, .. }) => {
                        assert!(needed > limit);
                        assert!(limit < GLOMMIO_MIN_MEMLOCK, "only below glommio's floor");
                        assert_eq!(previous, 0, "once it fits it keeps fitting");
                        let at_needed = Some(needed);
                        assert_eq!(
                            io_memory_per_shard(shards, DEFAULT_IO_MEMORY, at_needed, false),
                            Ok(MIN_IO_MEMORY),
                            "the named limit runs {shards} shards"
                        );
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn huge_and_zero_inputs_do_not_overflow() {
        assert_eq!(
            io_memory_per_shard(usize::MAX, usize::MAX, Some(u64::MAX - 1), false),
            Ok(MIN_IO_MEMORY)
        );
        let one = io_memory_per_shard(1, usize::MAX, Some(u64::MAX - 1), false);
        assert!(
            one.as_ref()
                .is_ok_and(|&size| to_u64(size).is_multiple_of(IO_MEMORY_STEP)),
            "{one:?}"
        );
        assert_eq!(
            io_memory_per_shard(0, DEFAULT_IO_MEMORY, Some(8 * MIB), false),
            io_memory_per_shard(1, DEFAULT_IO_MEMORY, Some(8 * MIB), false)
        );
    }

    #[test]
    fn memlock_message_says_what_to_raise_and_how() {
        let err = PreflightError::MemlockTooLow {
            limit: 64 * KIB,
            needed: needed_for(4),
            shards: 4,
        };
        assert_eq!(
            err.to_string(),
            "memlock limit 64 KiB is too low for 4 shards (need at least 1856 KiB): raise it \
             with `ulimit -l`, LimitMEMLOCK= in the systemd unit or `docker run --ulimit \
             memlock=`"
        );
        let err = PreflightError::MemlockTooLow {
            limit: 8 * MIB,
            needed: needed_for(32),
            shards: 32,
        };
        let text = err.to_string();
        assert!(text.starts_with("memlock limit 8 MiB is too low for 32 shards (need at least"));
        assert!(
            text.ends_with(", grant it CAP_IPC_LOCK, or run fewer shards (--shards 18)"),
            "{text}"
        );
        assert!(fits(18, MIN_IO_MEMORY, 8 * MIB) && !fits(19, MIN_IO_MEMORY, 8 * MIB));
    }

    #[test]
    fn io_uring_errors_are_one_actionable_line() {
        let all = [
            PreflightError::Disabled,
            PreflightError::Restricted { group: Some(1000) },
            PreflightError::Restricted { group: None },
            PreflightError::Unsupported,
            PreflightError::Blocked { errno: libc::EPERM },
            PreflightError::SetupFailed {
                errno: libc::ENOMEM,
            },
            PreflightError::SetupFailed {
                errno: libc::EMFILE,
            },
        ];
        for err in all {
            let text = err.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains("forkless needs"), "{text}");
        }
        assert_eq!(
            PreflightError::Disabled.to_string(),
            "io_uring is disabled on this host (sysctl kernel.io_uring_disabled=2); forkless \
             needs it: run `sysctl -w kernel.io_uring_disabled=0`"
        );
        let blocked = PreflightError::Blocked { errno: libc::EPERM }.to_string();
        assert!(
            blocked.contains("(EPERM)") && blocked.contains("seccomp"),
            "{blocked}"
        );
        let nomem = PreflightError::SetupFailed {
            errno: libc::ENOMEM,
        }
        .to_string();
        assert!(nomem.contains("ulimit -l"), "{nomem}");
    }

    #[test]
    fn classify_trusts_a_successful_probe() {
        assert_eq!(classify_io_uring(Ok(()), Some(2), None), Ok(()));
        assert_eq!(classify_io_uring(Ok(()), Some(1), Some(-1)), Ok(()));
        assert_eq!(classify_io_uring(Ok(()), None, None), Ok(()));
    }

    #[test]
    fn classify_explains_a_refusal_by_the_sysctl_or_seccomp() {
        use PreflightError::*;
        for errno in [libc::EPERM, libc::EACCES] {
            assert_eq!(
                classify_io_uring(Err(errno), Some(2), Some(-1)),
                Err(Disabled)
            );
            assert_eq!(
                classify_io_uring(Err(errno), Some(1), Some(1000)),
                Err(Restricted { group: Some(1000) })
            );
            assert_eq!(
                classify_io_uring(Err(errno), Some(1), Some(-1)),
                Err(Restricted { group: None })
            );
            assert_eq!(
                classify_io_uring(Err(errno), Some(0), Some(-1)),
                Err(Blocked { errno })
            );
            assert_eq!(
                classify_io_uring(Err(errno), None, None),
                Err(Blocked { errno })
            );
        }
    }

    #[test]
    fn classify_names_missing_kernels_and_other_failures() {
        use PreflightError::*;
        assert_eq!(
            classify_io_uring(Err(libc::ENOSYS), None, None),
            Err(Unsupported)
        );
        assert_eq!(
            classify_io_uring(Err(libc::ENOSYS), Some(2), None),
            Err(Unsupported)
        );
        assert_eq!(
            classify_io_uring(Err(libc::ENOMEM), Some(0), None),
            Err(SetupFailed {
                errno: libc::ENOMEM
            })
        );
        assert_eq!(
            classify_io_uring(Err(0), None, None),
            Err(SetupFailed { errno: 0 })
        );
    }

    #[test]
    fn cap_eff_is_parsed_from_status() {
        let root = "Name:\tforkless\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(root), Some(0x1ff_feff_ffff));
        assert!(parse_cap_eff(root).is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0));
        let docker = "CapEff:\t00000000a80425fb\n";
        assert!(parse_cap_eff(docker).is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) == 0));
        assert_eq!(
            parse_cap_eff("CapEff:\t0000000000004000"),
            Some(1 << CAP_IPC_LOCK)
        );
        for status in [
            "",
            "CapEff:",
            "CapEff:\tzz",
            "CapPrm:\t1",
            "CapEff:\t11111111111111111",
        ] {
            assert_eq!(parse_cap_eff(status), None, "{status:?}");
        }
    }

    #[test]
    fn only_the_identity_uid_map_is_the_initial_namespace() {
        assert!(is_initial_user_namespace(
            "         0          0 4294967295\n"
        ));
        assert!(!is_initial_user_namespace(
            "         0          0          1\n"
        ));
        assert!(!is_initial_user_namespace("0 100000 65536\n"));
        assert!(!is_initial_user_namespace("0 0 4294967295\n1 1 1\n"));
        assert!(!is_initial_user_namespace(""));
        assert!(!is_initial_user_namespace("garbage"));
    }

    #[test]
    fn sizes_read_in_the_unit_people_type() {
        assert_eq!(size(64 * KIB), "64 KiB");
        assert_eq!(size(8 * MIB), "8 MiB");
        assert_eq!(size(1856 * KIB), "1856 KiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(0), "0 KiB");
    }

    #[test]
    fn the_probe_on_this_machine_gives_a_verdict() {
        // Either io_uring works here or the verdict is a readable line.
        match check_io_uring() {
            Ok(()) => assert_eq!(probe_io_uring_setup(), Ok(())),
            Err(err) => assert!(err.to_string().contains("io_uring"), "{err}"),
        }
        if let Some(limit) = memlock_limit() {
            assert!(limit < u64::MAX);
        }
    }
}
