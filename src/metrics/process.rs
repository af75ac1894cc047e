//! The standard `process_*` metrics, read from `/proc/self` at each scrape.
//!
//! The `prometheus` crate's own process collector keeps CPU time as an integer counter of
//! whole seconds, so an idle replica's `rate(process_cpu_seconds_total[…])` reads 0 with an
//! occasional jump of a full second. This one reports fractional seconds; the names and
//! meanings are the Prometheus client conventions.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};

pub struct ProcessCollector {
    cpu: Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    virtual_memory: IntGauge,
    resident_memory: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    descs: Vec<Desc>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("valid");
        let open_fds =
            IntGauge::new("process_open_fds", "Number of open file descriptors.").expect("valid");
        let max_fds = IntGauge::new(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )
        .expect("valid");
        let virtual_memory = IntGauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )
        .expect("valid");
        let resident_memory = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .expect("valid");
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .expect("valid");
        let threads = IntGauge::new("process_threads", "Number of OS threads in the process.")
            .expect("valid");
        let descs = [
            cpu.desc(),
            open_fds.desc(),
            max_fds.desc(),
            virtual_memory.desc(),
            resident_memory.desc(),
            start_time.desc(),
            threads.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let c = Self {
            cpu,
            open_fds,
            max_fds,
            virtual_memory,
            resident_memory,
            start_time,
            threads,
            descs,
        };
        c.read_start_time();
        c
    }

    fn read_start_time(&self) {
        #[cfg(target_os = "linux")]
        if let (Ok(p), Ok(boot)) = (procfs::process::Process::myself(), procfs::boot_time_secs()) {
            if let Ok(stat) = p.stat() {
                let since_boot = stat.starttime as f64 / procfs::ticks_per_second() as f64;
                self.start_time.set(boot as f64 + since_boot);
            }
        }
    }

    fn refresh(&self) {
        #[cfg(target_os = "linux")]
        {
            let Ok(p) = procfs::process::Process::myself() else {
                return;
            };
            if let Ok(n) = p.fd_count() {
                self.open_fds.set(n as i64);
            }
            if let Ok(limits) = p.limits() {
                if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
                    self.max_fds.set(max as i64);
                }
            }
            if let Ok(stat) = p.stat() {
                self.virtual_memory.set(stat.vsize as i64);
                self.resident_memory
                    .set(stat.rss as i64 * procfs::page_size() as i64);
                self.threads.set(stat.num_threads);
                let total = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
                let delta = total - self.cpu.get();
                // Two concurrent scrapes may both see the same total: never count it twice.
                if delta > 0.0 {
                    self.cpu.inc_by(delta);
                }
            }
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        [
            self.cpu.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.virtual_memory.collect(),
            self.resident_memory.collect(),
            self.start_time.collect(),
            self.threads.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reports_fractional_cpu_and_memory() {
        let c = ProcessCollector::new();
        // Burn a little CPU so the counter moves by less than a second.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&c.collect(), &mut text)
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing"))
                .parse()
                .unwrap()
        };
        let cpu = value("process_cpu_seconds_total");
        assert!(cpu > 0.0 && cpu.fract() != 0.0, "cpu {cpu}");
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_threads") >= 1.0);
    }
}
