//! The CPU budget: which CPUs this process may run on, and how many shards
//! `--shards max` means.
//!
//! Two limits bound a process, and both are read here:
//!
//! - the **affinity mask** (`sched_getaffinity`), which already reflects
//!   `taskset`, `numactl` and a cgroup `cpuset`: the CPUs a shard may be
//!   pinned to;
//! - the **cgroup CPU quota** (v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
//!   `cpu.cfs_period_us`), which caps how much CPU time the process gets
//!   without saying where. Docker's `--cpus 1.5` and a Kubernetes CPU limit
//!   land here. Every ancestor cgroup up to the root of the mounted hierarchy
//!   may set its own quota, and the smallest one binds.
//!
//! Contract:
//!
//! - [`detect`] never fails and never panics: an unreadable or
//!   malformed file means "no limit found there", a failed affinity call
//!   falls back to `0..available_parallelism`. The result always names at
//!   least one CPU.
//! - [`CpuBudget::max_shards`] is at least 1 and at most the number of CPUs
//!   in the mask.
//! - Parsing is pure (`&str` in, value out) and tested with literal inputs;
//!   the I/O shell reads files under a root directory so tests can point it
//!   at a fake `/proc` and `/sys` tree.
//! - Nothing here blocks for longer than a few small file reads. Call
//!   `detect` once, from the main thread, before any thread pins itself: the
//!   mask it reads is the calling thread's. [`detect_process`] reads the
//!   main thread's mask instead (forkless never pins the main thread), so a
//!   pinned shard thread can still learn the whole process's budget.

use std::fs;
use std::num::NonZeroUsize;
use std::path::{Component, Path, PathBuf};

/// The CPUs this process may use and the CPU time it may spend.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CpuBudget {
    /// CPU ids in this process's affinity mask, ascending, never empty after
    /// [`detect`].
    pub(crate) cpus: Vec<usize>,
    /// The cgroup CPU quota in CPUs (`1.5` = one and a half CPUs of time per
    /// period), the smallest along the cgroup's ancestry; `None` = no quota.
    pub(crate) quota: Option<f64>,
}

/// Reads the affinity mask and the cgroup quota of this process.
pub(crate) fn detect() -> CpuBudget {
    CpuBudget {
        cpus: affinity().unwrap_or_else(fallback_cpus),
        quota: cgroup_quota(Path::new("/")),
    }
}

/// As [`detect`], from any thread: the mask read is the one of the
/// process's main thread (the thread group leader, `sched_getaffinity` of
/// the process id), which forkless never pins, rather than the calling
/// thread's (a shard's is its one CPU). Falls back to the calling thread's
/// mask if the main thread's cannot be read.
pub(crate) fn detect_process() -> CpuBudget {
    // SAFETY: getpid(2) has no preconditions and cannot fail.
    let pid = unsafe { libc::getpid() };
    CpuBudget {
        cpus: affinity_of(pid)
            .or_else(affinity)
            .unwrap_or_else(fallback_cpus),
        quota: cgroup_quota(Path::new("/")),
    }
}

/// Confines the calling thread to `cpus` (`sched_setaffinity`), e.g. to
/// undo the pinning it inherited from a shard thread that spawned it.
pub(crate) fn set_thread_affinity(cpus: &[usize]) -> std::io::Result<()> {
    let word_bits = libc::c_ulong::BITS as usize;
    let words = cpus.iter().max().map_or(1, |&max| max / word_bits + 1);
    let mut mask: Vec<libc::c_ulong> = vec![0; words];
    for &cpu in cpus {
        mask[cpu / word_bits] |= 1 << (cpu % word_bits);
    }
    let bytes = size_of_val(mask.as_slice());
    // SAFETY: sched_setaffinity(2) reads `bytes` bytes from the pointer,
    // which points to `mask`, a live buffer of exactly that size. Pid 0 is
    // the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setaffinity, 0, bytes, mask.as_ptr()) };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl CpuBudget {
    /// How many shards `--shards max` starts: one per CPU in the affinity
    /// mask, capped by the quota rounded up (a 1.5-CPU quota gets 2 shards:
    /// the second one is still worth half a CPU), and never fewer than 1.
    pub(crate) fn max_shards(&self) -> usize {
        let cpus = self.cpus.len().max(1);
        match self.quota {
            // `as` saturates on huge values; the `min` makes that harmless.
            Some(quota) if quota.is_finite() && quota > 0.0 => {
                cpus.min(quota.ceil() as usize).max(1)
            }
            _ => cpus,
        }
    }

    /// The CPU to pin each shard to: shard `i` gets `cpus[i]` when every
    /// shard can have a CPU of its own; with more shards than CPUs none is
    /// pinned (`None`) and the OS schedules them, since pinning two shards to
    /// one CPU would make them take turns while other CPUs might idle.
    pub(crate) fn placement(&self, shards: usize) -> Vec<Option<usize>> {
        if shards <= self.cpus.len() {
            self.cpus
                .iter()
                .take(shards)
                .map(|&cpu| Some(cpu))
                .collect()
        } else {
            vec![None; shards]
        }
    }
}

/// The largest CPU count the affinity buffer grows to (8 KiB of mask), far
/// beyond the 8192 that Linux's `NR_CPUS` allows on common architectures.
const MAX_AFFINITY_CPUS: usize = 1 << 16;

/// The affinity mask of the calling thread, or `None` if the kernel would
/// not give it.
fn affinity() -> Option<Vec<usize>> {
    affinity_of(0)
}

/// The affinity mask of thread `tid` (0: the calling thread).
fn affinity_of(tid: libc::pid_t) -> Option<Vec<usize>> {
    grow_mask(|mask| {
        let bytes = size_of_val(mask);
        // SAFETY: sched_getaffinity(2) writes at most `bytes` bytes through
        // the pointer, and `mask` is a live, writable, c_ulong-aligned
        // buffer of exactly `bytes` bytes for the duration of the call. `tid` (0:
        // this thread) is any thread id; no other memory is touched.
        let written =
            unsafe { libc::syscall(libc::SYS_sched_getaffinity, tid, bytes, mask.as_mut_ptr()) };
        // The kernel fills the first `written` bytes; the rest stays 0.
        match written {
            0.. => Ok(()),
            _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        }
    })
}

/// Asks `get_mask` to fill a zeroed CPU mask, starting at glibc's
/// `CPU_SETSIZE` (1024 CPUs) and doubling the buffer while it answers
/// `EINVAL`, which the kernel does when the buffer is smaller than its own
/// CPU mask (machines with more than 1024 possible CPUs). `None` on any
/// other error, past [`MAX_AFFINITY_CPUS`], or for an empty mask.
fn grow_mask(
    mut get_mask: impl FnMut(&mut [libc::c_ulong]) -> Result<(), i32>,
) -> Option<Vec<usize>> {
    let word_bits = libc::c_ulong::BITS as usize;
    let mut cpus = 1024;
    while cpus <= MAX_AFFINITY_CPUS {
        let mut mask: Vec<libc::c_ulong> = vec![0; cpus.div_ceil(word_bits)];
        match get_mask(&mut mask) {
            Ok(()) => {
                let ids = cpus_in_mask(&mask);
                return (!ids.is_empty()).then_some(ids);
            }
            Err(libc::EINVAL) => cpus *= 2,
            Err(_) => return None,
        }
    }
    None
}

/// CPUs `0..n` where `n` is what the standard library believes is available:
/// used only when `sched_getaffinity` fails.
fn fallback_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    (0..n).collect()
}

/// The CPU ids whose bits are set in a kernel CPU mask: an array of
/// `unsigned long`, CPU `i` at bit `i % BITS` of word `i / BITS`.
fn cpus_in_mask(mask: &[libc::c_ulong]) -> Vec<usize> {
    let word_bits = libc::c_ulong::BITS as usize;
    let mut ids = Vec::new();
    for (index, &word) in mask.iter().enumerate() {
        for bit in 0..word_bits {
            if word & (1 << bit) != 0 {
                ids.push(index * word_bits + bit);
            }
        }
    }
    ids
}

/// Parses a cgroup v2 `cpu.max`: `"$QUOTA $PERIOD"` in microseconds, or
/// `"max $PERIOD"` for no limit. Returns the quota in CPUs.
pub(crate) fn parse_cpu_max(content: &str) -> Option<f64> {
    let mut fields = content.split_whitespace();
    let quota = fields.next()?;
    let period: u64 = fields.next()?.parse().ok()?;
    if fields.next().is_some() || quota == "max" {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    cpus_of(quota, period)
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; a quota of
/// `-1` means no limit. Returns the quota in CPUs.
pub(crate) fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    cpus_of(u64::try_from(quota).ok()?, period)
}

/// `quota / period`, or `None` when either is zero (the kernel allows
/// neither, so such a file is not one we understand).
fn cpus_of(quota: u64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Splits a `/proc/self/cgroup` line, `hierarchy-id:controllers:path`.
fn cgroup_line(line: &str) -> Option<(&str, &str)> {
    let mut fields = line.splitn(3, ':');
    let id = fields.next()?;
    let controllers = fields.next()?;
    let path = fields.next()?;
    (id.parse::<u32>().is_ok() && path.starts_with('/')).then_some((controllers, path))
}

/// The cgroup path of this process in the v1 hierarchy that carries
/// `controller` (`"cpu"` matches `cpu`, `cpu,cpuacct` and `cpuacct,cpu`).
fn v1_cgroup_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let (controllers, path) = cgroup_line(line)?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

/// The cgroup path of this process in the v2 hierarchy (the `0::` line).
fn v2_cgroup_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        line.strip_prefix("0::")
            .filter(|path| path.starts_with('/'))
    })
}

/// A mounted filesystem, from one line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// The directory of the filesystem that appears at `mount_point`: for a
    /// cgroup hierarchy, the cgroup whose directory this is.
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    fn is_cgroup2(&self) -> bool {
        self.fstype == "cgroup2"
    }

    fn is_cgroup1_with(&self, controller: &str) -> bool {
        self.fstype == "cgroup" && self.super_options.split(',').any(|o| o == controller)
    }
}

/// Parses `/proc/self/mountinfo`, skipping lines it does not understand.
fn parse_mountinfo(content: &str) -> Vec<Mount> {
    content.lines().filter_map(parse_mountinfo_line).collect()
}

/// `36 35 98:0 /root /mnt opts [optional...] - fstype source super-opts`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|&f| f == "-")?;
    let [_, _, _, root, mount_point, _, ..] = fields[..separator] else {
        return None;
    };
    let [fstype, _source, super_options, ..] = *fields.get(separator + 1..)? else {
        return None;
    };
    Some(Mount {
        root: PathBuf::from(unescape(root)),
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: fstype.to_owned(),
        super_options: super_options.to_owned(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a
/// backslash); anything else is kept as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|_| byte == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(code) => {
                out.push(code);
                i += 4;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where cgroup `path` lives in a hierarchy mounted at one of `mounts`:
/// `(mount point, cgroup directory)`. The mount shows the hierarchy from its
/// `root` down, so the directory is the mount point joined with `path`
/// relative to that root. `None` when no mount shows this cgroup (the cgroup
/// is outside what this mount namespace can see): a limit there cannot be
/// read, so none is assumed rather than guessed.
fn locate_cgroup(mounts: &[&Mount], path: &str) -> Option<(PathBuf, PathBuf)> {
    mounts.iter().find_map(|mount| {
        let relative = Path::new(path).strip_prefix(&mount.root).ok()?;
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        plain.then(|| (mount.mount_point.clone(), mount.mount_point.join(relative)))
    })
}

/// The cgroup CPU quota of this process, reading `/proc` and `/sys` under
/// `root` (`/` outside tests). A v1 `cpu` hierarchy is consulted first: on a
/// hybrid host (v1 controllers plus an empty v2 hierarchy) it is the one that
/// carries the `cpu` controller, since a controller belongs to one hierarchy.
fn cgroup_quota(root: &Path) -> Option<f64> {
    let proc_cgroup = read_lossy(&root.join("proc/self/cgroup"))?;
    let mountinfo = read_lossy(&root.join("proc/self/mountinfo")).unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    v1_quota(root, &proc_cgroup, &mounts).or_else(|| v2_quota(root, &proc_cgroup, &mounts))
}

fn v1_quota(root: &Path, proc_cgroup: &str, mounts: &[Mount]) -> Option<f64> {
    let path = v1_cgroup_path(proc_cgroup, "cpu")?;
    let cpu_mounts: Vec<&Mount> = mounts.iter().filter(|m| m.is_cgroup1_with("cpu")).collect();
    let (top, dir) = locate_cgroup(&cpu_mounts, path)?;
    smallest_quota_upwards(root, &top, dir, |dir| {
        let quota = read_lossy(&dir.join("cpu.cfs_quota_us"))?;
        let period = read_lossy(&dir.join("cpu.cfs_period_us"))?;
        parse_cfs(&quota, &period)
    })
}

fn v2_quota(root: &Path, proc_cgroup: &str, mounts: &[Mount]) -> Option<f64> {
    let path = v2_cgroup_path(proc_cgroup)?;
    // With no cgroup2 line in mountinfo (or none readable), assume the usual
    // mount; if it is not there, the reads below find nothing.
    let usual = Mount {
        root: PathBuf::from("/"),
        mount_point: PathBuf::from("/sys/fs/cgroup"),
        fstype: "cgroup2".to_owned(),
        super_options: String::new(),
    };
    let mut v2_mounts: Vec<&Mount> = mounts.iter().filter(|m| m.is_cgroup2()).collect();
    if v2_mounts.is_empty() {
        v2_mounts.push(&usual);
    }
    let (top, dir) = locate_cgroup(&v2_mounts, path)?;
    smallest_quota_upwards(root, &top, dir, |dir| {
        parse_cpu_max(&read_lossy(&dir.join("cpu.max"))?)
    })
}

/// The smallest quota that `quota_in` finds in `dir` and each of its parents
/// up to and including `top`, the highest directory this process can see.
fn smallest_quota_upwards(
    root: &Path,
    top: &Path,
    mut dir: PathBuf,
    quota_in: impl Fn(&Path) -> Option<f64>,
) -> Option<f64> {
    let mut smallest: Option<f64> = None;
    loop {
        if let Some(quota) = quota_in(&under(root, &dir)) {
            smallest = Some(smallest.map_or(quota, |s| s.min(quota)));
        }
        if dir == top || !dir.pop() {
            return smallest;
        }
    }
}

/// `path` (absolute) inside the tree rooted at `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// A small text file, with bytes that are not UTF-8 replaced (mountinfo may
/// name paths that are not UTF-8; the cgroup lines we need still parse).
fn read_lossy(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn budget(cpus: &[usize], quota: Option<f64>) -> CpuBudget {
        CpuBudget {
            cpus: cpus.to_vec(),
            quota,
        }
    }

    #[test]
    fn max_shards_is_the_cpu_count_without_a_quota() {
        assert_eq!(budget(&[0, 1, 2, 3, 4, 5, 6, 7], None).max_shards(), 8);
        assert_eq!(budget(&[3, 5], None).max_shards(), 2);
    }

    #[test]
    fn max_shards_is_capped_by_the_quota_rounded_up() {
        let eight = [0, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            budget(&eight, parse_cpu_max("150000 100000")).max_shards(),
            2
        );
        assert_eq!(budget(&eight, Some(2.0)).max_shards(), 2);
        assert_eq!(budget(&eight, Some(0.1)).max_shards(), 1);
        assert_eq!(budget(&eight, Some(64.0)).max_shards(), 8);
        assert_eq!(budget(&eight, Some(1e300)).max_shards(), 8);
    }

    #[test]
    fn max_shards_is_at_least_one() {
        assert_eq!(budget(&[], None).max_shards(), 1);
        assert_eq!(budget(&[0, 1], Some(0.0)).max_shards(), 2);
        assert_eq!(budget(&[0, 1], Some(f64::NAN)).max_shards(), 2);
        assert_eq!(budget(&[0, 1], Some(-1.0)).max_shards(), 2);
    }

    #[test]
    fn placement_pins_each_shard_to_its_own_cpu() {
        let b = budget(&[2, 3, 6, 7], None);
        assert_eq!(b.placement(4), vec![Some(2), Some(3), Some(6), Some(7)]);
        assert_eq!(b.placement(2), vec![Some(2), Some(3)]);
        assert_eq!(b.placement(0), Vec::<Option<usize>>::new());
    }

    #[test]
    fn placement_leaves_shards_unpinned_when_cpus_run_out() {
        let b = budget(&[0, 1], None);
        assert_eq!(b.placement(3), vec![None, None, None]);
        assert_eq!(budget(&[], None).placement(1), vec![None]);
    }

    #[test]
    fn cpus_in_mask_reads_bits_across_words() {
        let bits = libc::c_ulong::BITS as usize;
        assert_eq!(cpus_in_mask(&[0b1011, 0]), vec![0, 1, 3]);
        assert_eq!(cpus_in_mask(&[0, 1]), vec![bits]);
        assert_eq!(
            cpus_in_mask(&[1 << (bits - 1), 0b10]),
            vec![bits - 1, bits + 1]
        );
        assert_eq!(cpus_in_mask(&[0; 16]), Vec::<usize>::new());
        assert_eq!(cpus_in_mask(&[]), Vec::<usize>::new());
    }

    /// A kernel with `possible` CPUs, `online` of them in the mask: EINVAL
    /// for a buffer too small to hold them all, as sched_getaffinity does.
    fn fake_kernel(
        possible: usize,
        online: &[usize],
    ) -> impl FnMut(&mut [libc::c_ulong]) -> Result<(), i32> {
        let word_bits = libc::c_ulong::BITS as usize;
        move |mask| {
            if mask.len() * word_bits < possible {
                return Err(libc::EINVAL);
            }
            for &cpu in online {
                mask[cpu / word_bits] |= 1 << (cpu % word_bits);
            }
            Ok(())
        }
    }

    #[test]
    fn grow_mask_retries_with_larger_buffers_past_1024_cpus() {
        assert_eq!(grow_mask(fake_kernel(64, &[0, 5])), Some(vec![0, 5]));
        assert_eq!(
            grow_mask(fake_kernel(4096, &[3, 1500, 4095])),
            Some(vec![3, 1500, 4095])
        );
        let mut sizes = Vec::new();
        let mut kernel = fake_kernel(3000, &[2999]);
        let ids = grow_mask(|mask| {
            sizes.push(mask.len() * libc::c_ulong::BITS as usize);
            kernel(mask)
        });
        assert_eq!(ids, Some(vec![2999]));
        assert_eq!(sizes, vec![1024, 2048, 4096]);
    }

    #[test]
    fn grow_mask_gives_up_cleanly() {
        assert_eq!(
            grow_mask(|_| Err(libc::EINVAL)),
            None,
            "bounded, no endless loop"
        );
        assert_eq!(grow_mask(|_| Err(libc::EPERM)), None);
        assert_eq!(grow_mask(|_| Ok(())), None, "an empty mask is no answer");
    }

    #[test]
    fn detect_names_sorted_distinct_cpus_on_this_machine() {
        let b = detect();
        assert!(!b.cpus.is_empty());
        assert!(b.cpus.windows(2).all(|w| w[0] < w[1]), "{:?}", b.cpus);
        assert!((1..=b.cpus.len()).contains(&b.max_shards()));
        let direct = affinity().unwrap_or_default();
        assert_eq!(direct, b.cpus, "the affinity call itself should work here");
    }

    #[test]
    fn cpu_max_parses_quota_and_period() {
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("50000 100000"), Some(0.5));
    }

    #[test]
    fn cpu_max_without_a_limit_or_malformed_is_none() {
        for content in [
            "max 100000",
            "max",
            "",
            "\n",
            "150000",
            "150000 100000 7",
            "abc 100000",
            "150000 abc",
            "-5 100000",
            "0 100000",
            "150000 0",
            "1.5 1",
            "99999999999999999999999 1",
        ] {
            assert_eq!(parse_cpu_max(content), None, "{content:?}");
        }
    }

    #[test]
    fn cfs_parses_quota_and_period() {
        assert_eq!(parse_cfs("150000\n", "100000\n"), Some(1.5));
        assert_eq!(parse_cfs("50000", "100000"), Some(0.5));
    }

    #[test]
    fn cfs_without_a_limit_or_malformed_is_none() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("-7", "100000"), None);
        assert_eq!(parse_cfs("0", "100000"), None);
        assert_eq!(parse_cfs("150000", "0"), None);
        assert_eq!(parse_cfs("", ""), None);
        assert_eq!(parse_cfs("max", "100000"), None);
        assert_eq!(parse_cfs("150000", "-100000"), None);
    }

    /// /proc/self/cgroup on a hybrid host (this project's dev machines).
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/c15e\n\
        2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn cgroup_paths_are_found_per_version() {
        assert_eq!(v1_cgroup_path(HYBRID_CGROUP, "cpu"), Some("/"));
        assert_eq!(
            v1_cgroup_path(HYBRID_CGROUP, "memory"),
            Some("/process_api/c15e")
        );
        assert_eq!(v2_cgroup_path(HYBRID_CGROUP), Some("/"));

        let docker_v1 = "12:cpuset:/docker/abc\n4:cpuacct,cpu:/docker/abc\n";
        assert_eq!(v1_cgroup_path(docker_v1, "cpu"), Some("/docker/abc"));
        assert_eq!(v1_cgroup_path(docker_v1, "cpuacct"), Some("/docker/abc"));
        assert_eq!(v2_cgroup_path(docker_v1), None);

        let v2_only = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(v1_cgroup_path(v2_only, "cpu"), None);
        assert_eq!(
            v2_cgroup_path(v2_only),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
    }

    #[test]
    fn cgroup_paths_keep_colons_and_reject_malformed_lines() {
        assert_eq!(v2_cgroup_path("0::/a:b\n"), Some("/a:b"));
        for content in [
            "",
            "garbage",
            "0:",
            "0::",
            "0::relative",
            "x:cpu:/a",
            ":cpu:/a",
        ] {
            assert_eq!(v1_cgroup_path(content, "cpu"), None, "{content:?}");
            assert_eq!(v2_cgroup_path(content), None, "{content:?}");
        }
        assert_eq!(v1_cgroup_path("3:cpuset:/a\n", "cpu"), None);
    }

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_cgroup_hierarchies() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        let cpu: Vec<&Mount> = mounts.iter().filter(|m| m.is_cgroup1_with("cpu")).collect();
        assert_eq!(cpu.len(), 1, "cpuacct alone is not cpu");
        assert_eq!(cpu[0].mount_point, Path::new("/sys/fs/cgroup/cpu"));
        let v2: Vec<&Mount> = mounts.iter().filter(|m| m.is_cgroup2()).collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn mountinfo_handles_optional_fields_and_escapes() {
        let line = "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid shared:17 \
                    master:3 - cgroup cgroup rw,cpu,cpuacct";
        let mount = parse_mountinfo_line(line);
        assert_eq!(
            mount,
            Some(Mount {
                root: PathBuf::from("/docker/abc"),
                mount_point: PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                fstype: "cgroup".to_owned(),
                super_options: "rw,cpu,cpuacct".to_owned(),
            })
        );
        let spaced = "1 2 0:3 / /mnt/my\\040cgroups rw - cgroup2 none rw";
        let mount = parse_mountinfo_line(spaced).map(|m| m.mount_point);
        assert_eq!(mount, Some(PathBuf::from("/mnt/my cgroups")));
        assert_eq!(unescape("a\\134b\\04"), "a\\b\\04");
        assert_eq!(unescape("\\999\\"), "\\999\\");
    }

    #[test]
    fn mountinfo_skips_malformed_lines() {
        for line in [
            "",
            "-",
            "1 2 3 4 5 - cgroup2 x rw",
            "1 2 3 / /m rw - cgroup2",
            "no dash",
        ] {
            assert_eq!(parse_mountinfo_line(line), None, "{line:?}");
        }
        assert_eq!(
            parse_mountinfo("garbage\n\n1 2 0:3 / /m rw - cgroup2 c rw\n").len(),
            1
        );
    }

    fn mount(root: &str, mount_point: &str) -> Mount {
        Mount {
            root: PathBuf::from(root),
            mount_point: PathBuf::from(mount_point),
            fstype: "cgroup".to_owned(),
            super_options: "rw,cpu".to_owned(),
        }
    }

    #[test]
    fn locate_cgroup_translates_through_the_mount_root() {
        let host = mount("/", "/sys/fs/cgroup/cpu");
        assert_eq!(
            locate_cgroup(&[&host], "/kubepods/pod1/c1"),
            Some((
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/cpu/kubepods/pod1/c1")
            ))
        );
        let container = mount("/docker/abc", "/sys/fs/cgroup/cpu");
        assert_eq!(
            locate_cgroup(&[&container], "/docker/abc"),
            Some((
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/cpu")
            ))
        );
        assert_eq!(locate_cgroup(&[&container], "/docker/abcdef"), None);
        assert_eq!(locate_cgroup(&[&container], "/other"), None);
        assert_eq!(locate_cgroup(&[&host], "/../../escape"), None);
        assert_eq!(locate_cgroup(&[], "/"), None);
    }

    /// A fake `/proc` + `/sys` tree in the system temp directory, removed on
    /// drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> FakeRoot {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = format!(
                "forkless-cpus-{}-{}-{name}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let root = std::env::temp_dir().join(unique);
            fs::create_dir_all(&root).expect("create fake root");
            FakeRoot(root)
        }

        fn write(&self, path: &str, content: &str) -> &FakeRoot {
            let path = self.0.join(path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).expect("create fake dir");
            }
            fs::write(path, content).expect("write fake file");
            self
        }

        fn quota(&self) -> Option<f64> {
            cgroup_quota(&self.0)
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const V2_MOUNTINFO: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn v2_takes_the_smallest_quota_up_to_the_root() {
        let root = FakeRoot::new("v2-walk");
        root.write("proc/self/cgroup", "0::/kubepods/pod1/c1\n")
            .write("proc/self/mountinfo", V2_MOUNTINFO)
            .write("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n")
            .write("sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000\n")
            .write("sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n");
        assert_eq!(root.quota(), Some(1.5), "the pod's parent limit binds");

        root.write("sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "50000 100000\n");
        assert_eq!(root.quota(), Some(0.5), "a tighter child binds");

        // The root of the hierarchy is read too (a cgroup namespace root).
        root.write("sys/fs/cgroup/cpu.max", "20000 100000\n");
        assert_eq!(root.quota(), Some(0.2));
    }

    #[test]
    fn v2_without_any_limit_is_none() {
        let root = FakeRoot::new("v2-none");
        root.write("proc/self/cgroup", "0::/a/b\n")
            .write("proc/self/mountinfo", V2_MOUNTINFO)
            .write("sys/fs/cgroup/a/b/cpu.max", "max 100000\n")
            .write("sys/fs/cgroup/a/cpu.max", "max 100000\n");
        assert_eq!(root.quota(), None);
    }

    #[test]
    fn v2_in_a_cgroup_namespace_reads_the_mount_point() {
        let root = FakeRoot::new("v2-ns");
        root.write("proc/self/cgroup", "0::/\n")
            .write("proc/self/mountinfo", V2_MOUNTINFO)
            .write("sys/fs/cgroup/cpu.max", "250000 100000\n");
        assert_eq!(root.quota(), Some(2.5));
    }

    #[test]
    fn v2_assumes_the_usual_mount_when_mountinfo_is_missing() {
        let root = FakeRoot::new("v2-no-mountinfo");
        root.write("proc/self/cgroup", "0::/svc\n")
            .write("sys/fs/cgroup/svc/cpu.max", "300000 100000\n");
        assert_eq!(root.quota(), Some(3.0));
    }

    #[test]
    fn v1_reads_cfs_files_through_the_mount_root() {
        let root = FakeRoot::new("v1-docker");
        root.write(
            "proc/self/cgroup",
            "5:cpuset:/docker/abc\n4:cpu,cpuacct:/docker/abc\n",
        )
        .write(
            "proc/self/mountinfo",
            "40 30 0:35 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro shared:9 - cgroup cgroup \
                 rw,cpu,cpuacct\n",
        )
        .write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "50000\n")
        .write("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
        assert_eq!(root.quota(), Some(0.5));
    }

    #[test]
    fn v1_walks_up_and_treats_minus_one_as_no_limit() {
        let root = FakeRoot::new("v1-walk");
        let dir = "sys/fs/cgroup/cpu,cpuacct";
        root.write(
            "proc/self/cgroup",
            "3:cpuacct,cpu:/kubepods/pod1/c1\n0::/\n",
        )
        .write(
            "proc/self/mountinfo",
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu\n",
        )
        .write(&format!("{dir}/kubepods/pod1/c1/cpu.cfs_quota_us"), "-1\n")
        .write(
            &format!("{dir}/kubepods/pod1/c1/cpu.cfs_period_us"),
            "100000\n",
        );
        assert_eq!(root.quota(), None);

        root.write(&format!("{dir}/kubepods/pod1/cpu.cfs_quota_us"), "300000\n")
            .write(
                &format!("{dir}/kubepods/pod1/cpu.cfs_period_us"),
                "100000\n",
            )
            .write(&format!("{dir}/cpu.cfs_quota_us"), "-1\n")
            .write(&format!("{dir}/cpu.cfs_period_us"), "100000\n");
        assert_eq!(root.quota(), Some(3.0));
    }

    #[test]
    fn hybrid_host_without_limits_is_none() {
        let root = FakeRoot::new("hybrid");
        root.write("proc/self/cgroup", HYBRID_CGROUP)
            .write("proc/self/mountinfo", HYBRID_MOUNTINFO)
            .write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
            .write("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
            .write("sys/fs/cgroup/unified/cgroup.procs", "1\n");
        assert_eq!(root.quota(), None);

        root.write("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n");
        assert_eq!(
            root.quota(),
            Some(1.0),
            "the v1 cpu hierarchy carries the quota"
        );
    }

    #[test]
    fn missing_or_garbage_files_mean_no_quota() {
        let root = FakeRoot::new("garbage");
        assert_eq!(root.quota(), None, "no /proc/self/cgroup at all");
        root.write("proc/self/cgroup", "\u{0}\u{1}garbage::\n::\n")
            .write("proc/self/mountinfo", "- - -\n");
        assert_eq!(root.quota(), None);
        root.write("proc/self/cgroup", "0::/a\n")
            .write("proc/self/mountinfo", V2_MOUNTINFO)
            .write("sys/fs/cgroup/a/cpu.max", "lots 100000\n");
        assert_eq!(root.quota(), None);
    }
}
