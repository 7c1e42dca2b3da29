//! What `/proc` says about a server process and its descendants (Node's
//! cluster runs its workers as child processes): CPU time and resident memory.
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat`, which covers every
//! thread of the process (exited ones included), in clock ticks.

use std::time::Duration;

/// `pid` and every live process descending from it.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            if let Some(ppid) = stat_fields(&stat)
                .get(1)
                .and_then(|f| f.parse::<i32>().ok())
            {
                parents.push((child, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found
}

/// The fields of a `/proc/<pid>/stat` line after the command name, so that
/// index 0 is field 3 (`state`) of proc(5).
pub fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

/// `utime + stime` of one process (all its threads) in clock ticks.
pub fn ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let fields = stat_fields(&stat);
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of proc(5).
    field(11) + field(12)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU time (user + system) used so far by `pid` and its descendants.
pub fn cpu_time(pid: i32) -> Duration {
    let ticks: u64 = tree(pid).into_iter().map(ticks).sum();
    Duration::from_secs_f64(ticks as f64 / ticks_per_second() as f64)
}

/// Resident set size of `pid` and its descendants, in KiB (summed: pages
/// shared between Node's processes count once per process).
pub fn rss_kib(pid: i32) -> u64 {
    tree(pid).into_iter().filter_map(crate::rss_kib).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_a_command_with_spaces_and_parens() {
        let stat = "42 (my (odd) app) S 1 42 42 0 -1 4194560 1 0 0 0 7 3 0 0 20 0";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "1");
        assert_eq!(fields[11], "7");
        assert_eq!(fields[12], "3");
    }

    #[test]
    fn this_process_is_in_its_own_tree_and_uses_memory() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        assert_eq!(tree(me).first(), Some(&me));
        assert!(rss_kib(me) > 0);
    }
}
