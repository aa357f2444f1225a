//! The server process's resources over time, read from `/proc/<pid>`: resident memory, threads and open file
//! descriptors. Any server can be sampled this way, not only infergate.

use std::time::Instant;

use serde::Serialize;

/// One reading.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the scenario started.
    pub at: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
}

/// Reads the process now; `None` once it is gone (or on a system without `/proc`).
pub fn sample(pid: u32, since: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let rss_bytes = field("VmRSS:")? * 1024;
    let threads = field("Threads:")?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample { at: since.elapsed().as_secs_f64(), rss_bytes, threads, open_fds })
}

/// How much a resource grew from the start of a run to its end, comparing the median of the first and of the last
/// three readings (one reading is noise).
pub fn growth(samples: &[Sample], value: impl Fn(&Sample) -> u64) -> Option<(u64, u64)> {
    if samples.len() < 2 {
        return None;
    }
    let median = |part: &[Sample]| {
        let mut values: Vec<u64> = part.iter().map(&value).collect();
        values.sort_unstable();
        values[values.len() / 2]
    };
    let n = samples.len().min(3);
    Some((median(&samples[..n]), median(&samples[samples.len() - n..])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample(std::process::id(), Instant::now()).unwrap();
        assert!(sample.rss_bytes > 0 && sample.threads >= 1 && sample.open_fds >= 3);
    }

    #[test]
    fn growth_compares_medians_of_both_ends() {
        let at = |rss| Sample { at: 0.0, rss_bytes: rss, threads: 1, open_fds: 1 };
        let samples = [at(10), at(99), at(11), at(12), at(20), at(21), at(1)];
        assert_eq!(growth(&samples, |s| s.rss_bytes), Some((11, 20)));
        assert_eq!(growth(&samples[..1], |s| s.rss_bytes), None);
    }
}
