//! The telemetry sampler: a background task that reads process and system
//! memory, CPU load and the GPUs once per period and sends each reading as an
//! [`Event::Telemetry`].
//!
//! It runs on its own thread (a current-thread tokio runtime inside a plain
//! OS thread) and only ever `try_send`s, so a slow or full sink costs a
//! dropped sample, never a stalled trainer.

use super::nvml::{open_gpu_source, GpuSource};
use crate::event::{Event, TelemetrySample};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::oneshot;

/// The period callers should use: 2 Hz is smooth enough for the dashboard
/// and costs well under a percent of one core.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(500);

/// CPU percentages are differences between two readings; sysinfo needs this
/// much time between them for the numbers to mean anything.
pub const MIN_PERIOD: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;

/// One reading of the machine at a time, without a thread: the background
/// task calls [`Sampler::sample`] on every tick.
pub struct Sampler {
    /// None when sysinfo cannot read this platform; host fields are then 0.
    sys: Option<System>,
    pid: Option<Pid>,
    gpu: Option<Box<dyn GpuSource>>,
    /// Why `gpu` is None; repeated in every sample so a viewer that joins
    /// late still learns it.
    gpu_unavailable: Option<String>,
}

impl Sampler {
    /// A sampler over `gpu` (or the reason there is no GPU source). Also
    /// returns why host readings are unavailable, when they are.
    pub fn new(gpu: Result<Box<dyn GpuSource>, String>) -> (Self, Option<String>) {
        let (sys, host_problem) = match System::new() {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("host readings unavailable: {e}"))),
        };
        let pid = sysinfo::get_current_pid().ok();
        let (gpu, gpu_unavailable) = match gpu {
            Ok(g) => (Some(g), None),
            Err(reason) => (None, Some(reason)),
        };
        let mut sampler = Self {
            sys,
            pid,
            gpu,
            gpu_unavailable,
        };
        // Prime the CPU counters so the first real sample already has a
        // baseline to difference against.
        sampler.refresh_host();
        (sampler, host_problem)
    }

    fn refresh_host(&mut self) {
        let Some(sys) = self.sys.as_mut() else {
            return;
        };
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        if let Some(pid) = self.pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
        }
    }

    /// Read everything now; `t_ms` is the time since the run started.
    pub fn sample(&mut self, t_ms: u64) -> TelemetrySample {
        self.refresh_host();
        let mut out = TelemetrySample {
            t_ms,
            rss: 0,
            sys_used: 0,
            sys_total: 0,
            cpu_process_pct: 0.0,
            cpu_system_pct: 0.0,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            gpus: Vec::new(),
            gpu_unavailable: self.gpu_unavailable.clone(),
        };
        if let Some(sys) = &self.sys {
            out.sys_used = sys.used_memory();
            out.sys_total = sys.total_memory();
            out.cpu_system_pct = f64::from(sys.global_cpu_usage());
            if !sys.cpus().is_empty() {
                out.cores = sys.cpus().len() as u32;
            }
            if let Some(p) = self.pid.and_then(|pid| sys.process(pid)) {
                out.rss = p.memory();
                // 100 % is one core busy, so this can reach cores × 100.
                out.cpu_process_pct = f64::from(p.cpu_usage());
            }
        }
        if let Some(gpu) = self.gpu.as_mut() {
            match gpu.sample() {
                Ok(gpus) => out.gpus = gpus,
                Err(reason) => out.gpu_unavailable = Some(reason),
            }
        }
        out
    }
}

/// The running sampler; dropping it (or [`SamplerHandle::stop`]) ends the
/// thread.
pub struct SamplerHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SamplerHandle {
    /// Stop sampling and wait for the thread to finish its current reading.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Whether the sampling thread is still running (it ends by itself when
    /// the receiving side of the channel is gone).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may already have ended on its own; nothing to tell.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the sampler must not take the caller down with it.
            let _ = thread.join();
        }
    }
}

impl Drop for SamplerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start sampling the machine every `period` (at least [`MIN_PERIOD`];
/// [`DEFAULT_PERIOD`] is the usual choice), with timestamps relative to
/// `started`. The GPU source is opened on the sampler's own thread.
pub fn spawn_sampler(period: Duration, started: Instant, tx: SyncSender<Event>) -> SamplerHandle {
    spawn_with(period, started, tx, open_gpu_source)
}

/// [`spawn_sampler`] with a given GPU source (or the reason there is none),
/// for replaying fixed readings and for machines with their own GPU probe.
pub fn spawn_sampler_with_source(
    period: Duration,
    started: Instant,
    tx: SyncSender<Event>,
    gpu: Result<Box<dyn GpuSource>, String>,
) -> SamplerHandle {
    spawn_with(period, started, tx, move || gpu)
}

fn spawn_with<F>(
    period: Duration,
    started: Instant,
    tx: SyncSender<Event>,
    open: F,
) -> SamplerHandle
where
    F: FnOnce() -> Result<Box<dyn GpuSource>, String> + Send + 'static,
{
    let period = period.max(MIN_PERIOD);
    let (stop_tx, stop_rx) = oneshot::channel();
    let report = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("meft-telemetry".into())
        .spawn(move || run(period, started, tx, open, stop_rx));
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            let _ = report.try_send(Event::Message {
                text: format!("telemetry sampler could not start: {e}"),
            });
            None
        }
    };
    SamplerHandle {
        stop: Some(stop_tx),
        thread,
    }
}

fn run<F>(
    period: Duration,
    started: Instant,
    tx: SyncSender<Event>,
    open: F,
    mut stop: oneshot::Receiver<()>,
) where
    F: FnOnce() -> Result<Box<dyn GpuSource>, String>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.try_send(Event::Message {
                text: format!("telemetry sampler could not start: {e}"),
            });
            return;
        }
    };
    let (mut sampler, host_problem) = Sampler::new(open());
    if let Some(text) = host_problem {
        let _ = tx.try_send(Event::Message { text });
    }
    runtime.block_on(async move {
        // The first tick comes one period after priming, so CPU percentages
        // cover a whole period from the start.
        let first = tokio::time::Instant::now() + period;
        let mut ticks = tokio::time::interval_at(first, period);
        // After a slow reading, carry on at the period instead of bursting.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A send or a dropped handle both mean stop.
                _ = &mut stop => break,
                _ = ticks.tick() => {
                    let t_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    match tx.try_send(Event::Telemetry(sampler.sample(t_ms))) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                }
            }
        }
    });
}

/// Memory the system could give this process now (sysinfo's available
/// memory), where it can be read.
pub fn available_memory() -> Option<u64> {
    let mut sys = System::new().ok()?;
    sys.refresh_memory();
    Some(sys.available_memory()).filter(|&b| b > 0)
}

/// The machine a run trains on, for captions and reports: host name, CPU
/// model and logical cores, as far as the platform reports them.
pub fn machine() -> Option<String> {
    let mut parts = Vec::new();
    if let Ok(host) = System::host_name() {
        parts.push(host);
    }
    if let Ok(mut sys) = System::new() {
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let cpus = sys.cpus();
        if let Some(cpu) = cpus.first() {
            let brand = cpu.brand().split_whitespace().collect::<Vec<_>>().join(" ");
            let brand = if brand.is_empty() {
                System::cpu_arch()
            } else {
                brand
            };
            parts.push(format!("{brand} ({} cores)", cpus.len()));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// The process's peak resident set size so far (the kernel's VmHWM), where
/// the platform reports one.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::GpuSample;
    use std::sync::mpsc::sync_channel;

    struct FixedGpu;

    fn fixed_reading() -> GpuSample {
        GpuSample {
            index: 0,
            name: "Test GPU 24GB".into(),
            mem_used: 3 << 30,
            mem_total: 24 << 30,
            util_pct: Some(42.0),
            pcie_tx: Some(1_000_000),
            pcie_rx: Some(2_000_000),
            pcie_gen: Some(4),
            pcie_width: None,
        }
    }

    impl GpuSource for FixedGpu {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            Ok(vec![fixed_reading()])
        }
    }

    struct FailingGpu;

    impl GpuSource for FailingGpu {
        fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
            Err("NVML: GPU is lost".into())
        }
    }

    fn first_telemetry(rx: &std::sync::mpsc::Receiver<Event>) -> TelemetrySample {
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Telemetry(s)) => return s,
                Ok(_) => continue,
                Err(e) => panic!("no telemetry event: {e}"),
            }
        }
    }

    #[test]
    fn fixed_gpu_readings_come_out_in_the_event() {
        let (tx, rx) = sync_channel(16);
        let handle =
            spawn_sampler_with_source(MIN_PERIOD, Instant::now(), tx, Ok(Box::new(FixedGpu)));
        let sample = first_telemetry(&rx);
        handle.stop();
        assert_eq!(sample.gpus, vec![fixed_reading()]);
        assert_eq!(sample.gpu_unavailable, None);
    }

    #[test]
    fn a_failing_gpu_read_is_reported_in_the_sample() {
        let (mut sampler, _) = Sampler::new(Ok(Box::new(FailingGpu)));
        let sample = sampler.sample(5);
        assert_eq!(sample.t_ms, 5);
        assert!(sample.gpus.is_empty());
        assert_eq!(sample.gpu_unavailable.as_deref(), Some("NVML: GPU is lost"));
    }

    #[test]
    fn every_sample_says_why_there_is_no_gpu() {
        let (mut sampler, _) = Sampler::new(Err("no NVIDIA driver: test".into()));
        for t in 0..3 {
            let s = sampler.sample(t);
            assert_eq!(s.gpu_unavailable.as_deref(), Some("no NVIDIA driver: test"));
        }
    }

    #[test]
    fn real_sampler_reports_this_process() {
        let started = Instant::now();
        let (tx, rx) = sync_channel(64);
        let handle = spawn_sampler(DEFAULT_PERIOD, started, tx);
        std::thread::sleep(Duration::from_millis(1500));
        handle.stop();
        let samples: Vec<TelemetrySample> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Telemetry(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(!samples.is_empty(), "no telemetry in 1.5 s");
        let first = &samples[0];
        assert!(first.rss > 0);
        assert!(first.sys_total >= first.sys_used && first.sys_total > 0);
        assert!(first.cores >= 1);
        // Without a driver, the very first sample already says why.
        match open_gpu_source() {
            Err(reason) => assert_eq!(first.gpu_unavailable, Some(reason)),
            Ok(_) => assert!(first.gpu_unavailable.is_some() || !first.gpus.is_empty()),
        }
        assert!(samples.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    }

    #[test]
    fn a_full_channel_drops_samples_without_blocking() {
        let (tx, rx) = sync_channel(1);
        let handle =
            spawn_sampler_with_source(MIN_PERIOD, Instant::now(), tx, Ok(Box::new(FixedGpu)));
        std::thread::sleep(MIN_PERIOD * 4);
        // The thread kept ticking with a full channel; stopping still returns.
        handle.stop();
        let got: Vec<Event> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn the_sampler_ends_when_the_receiver_is_gone() {
        let (tx, rx) = sync_channel(4);
        let handle =
            spawn_sampler_with_source(MIN_PERIOD, Instant::now(), tx, Ok(Box::new(FixedGpu)));
        drop(rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!handle.is_running());
    }
}
