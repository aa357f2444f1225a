//! Process metrics read from /proc/self: resident memory, CPU time, open file descriptors, threads.

use prometheus::{Counter, IntGauge, Registry};

/// `/proc/<pid>/stat` counts CPU time in clock ticks of USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessMetrics {
    /// Held while refreshing: two scrapes at once must not both add the same CPU time to the counter.
    refreshing: std::sync::Mutex<()>,
    resident_memory: IntGauge,
    cpu_seconds: Counter,
    open_fds: IntGauge,
    threads: IntGauge,
}

impl ProcessMetrics {
    pub fn new(registry: &Registry) -> ProcessMetrics {
        let int_gauge =
            |name: &str, help: &str| super::registered(registry, IntGauge::new(name, help).expect("constant"));
        ProcessMetrics {
            refreshing: std::sync::Mutex::new(()),
            resident_memory: int_gauge("infergate_process_resident_memory_bytes", "Resident memory of the process."),
            cpu_seconds: super::registered(
                registry,
                Counter::new("infergate_process_cpu_seconds_total", "User and system CPU time of the process.")
                    .expect("constant"),
            ),
            open_fds: int_gauge("infergate_process_open_fds", "Open file descriptors."),
            threads: int_gauge("infergate_process_threads", "Threads of the process."),
        }
    }

    /// Reads /proc/self; a field that cannot be read keeps its last value.
    pub fn refresh(&self) {
        let _refreshing = self.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            // utime, stime and num_threads, fields 14, 15 and 20 of the line, are 11, 12 and 17 after the name.
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                // A counter cannot be set: add what the process used since the last read.
                let used = (user + system) / TICKS_PER_SECOND - self.cpu_seconds.get();
                if used > 0.0 {
                    self.cpu_seconds.inc_by(used);
                }
            }
            if let Some(threads) = fields.get(17).and_then(|f| f.parse().ok()) {
                self.threads.set(threads);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status")
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            self.resident_memory.set(kb * 1024);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
}
