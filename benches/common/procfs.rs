//! A process's resources from `/proc`, for the benches (each uses part of it).
#![allow(dead_code)]

/// A numeric field of `/proc/PID/status` (`VmRSS:`, `VmHWM:` in KiB, `Threads:`) of `pid`
/// (`self` for this process); 0 when the field is absent.
pub fn status_field(pid: &str, name: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Peak RSS (`VmHWM`) of `pid` in KiB.
pub fn peak_rss_kb(pid: &str) -> anyhow::Result<u64> {
    status_field(pid, "VmHWM:")
}

/// User and system CPU seconds of `pid` and of its reaped children.
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // utime, stime, cutime, cstime.
    Ok(ticks(&stat, 14..18) as f64 / 100.0) // USER_HZ on Linux
}

/// The sum of the numeric fields `fields` (numbered as in stat(5), from 1) of a `stat` file.
fn ticks(stat: &str, fields: std::ops::Range<usize>) -> u64 {
    // Fields after the command name (which may hold spaces, closed by the last `)`): field 3 on.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let after: Vec<&str> = rest.split_whitespace().collect();
    after.get(fields.start - 3..fields.end - 3).unwrap_or_default().iter().filter_map(|f| f.parse::<u64>().ok()).sum()
}

/// User and system CPU seconds of this process's threads named `name` (their `comm`): the
/// threads of one runtime, told apart from the rest of the process.
pub fn threads_cpu_seconds(name: &str) -> anyhow::Result<f64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        // A thread that ended since the listing has nothing more to count.
        let (Ok(comm), Ok(stat)) =
            (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("stat")))
        else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        // utime and stime.
        total += ticks(&stat, 14..16);
    }
    Ok(total as f64 / 100.0)
}
