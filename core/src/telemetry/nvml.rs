//! NVIDIA GPU readings behind one small trait, so the sampler never depends
//! on a driver being present and tests can feed fixed readings.
//!
//! [`open_gpu_source`] answers in about a millisecond on a machine without
//! the driver (the library simply fails to load); the reason it gives is what
//! every telemetry sample then carries in `gpu_unavailable`.

use crate::event::GpuSample;
use nvml_wrapper::enum_wrappers::device::PcieUtilCounter;
use nvml_wrapper::Nvml;

/// Anything that can report the state of the machine's GPUs.
pub trait GpuSource: Send {
    /// One reading per GPU; `Err` carries a one-line reason when the whole
    /// source failed this time (individual fields that fail become `None`).
    fn sample(&mut self) -> Result<Vec<GpuSample>, String>;
}

/// The real source: the NVIDIA Management Library of the installed driver.
pub struct NvmlSource {
    nvml: Nvml,
}

impl NvmlSource {
    /// Load the driver's NVML; `Err` says why there are no GPU readings.
    pub fn open() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| {
            let text = crate::fsx::one_line(e);
            // The loader's own words are long and say the same thing.
            if text.contains("libnvidia-ml") {
                "no NVIDIA driver (libnvidia-ml.so.1 not found)".to_string()
            } else {
                format!("no NVIDIA driver: {text}")
            }
        })?;
        match nvml.device_count() {
            Ok(0) => Err("no NVIDIA GPU: the driver reports no devices".into()),
            Ok(_) => Ok(Self { nvml }),
            Err(e) => Err(format!(
                "NVML cannot count devices: {}",
                crate::fsx::one_line(e)
            )),
        }
    }

    fn read_device(&self, index: u32) -> GpuSample {
        let device = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            // Keep the slot so a viewer still sees that the GPU exists.
            Err(e) => {
                return GpuSample {
                    index,
                    name: format!("GPU {index} (unreadable: {})", crate::fsx::one_line(e)),
                    mem_used: 0,
                    mem_total: 0,
                    util_pct: None,
                    pcie_tx: None,
                    pcie_rx: None,
                    pcie_gen: None,
                    pcie_width: None,
                }
            }
        };
        let mem = device.memory_info().ok();
        // NVML reports PCIe throughput in KB/s (1024 bytes) over a 20 ms window.
        let pcie = |counter| {
            device
                .pcie_throughput(counter)
                .ok()
                .map(|kb| u64::from(kb) * 1024)
        };
        GpuSample {
            index,
            name: device.name().unwrap_or_else(|_| format!("GPU {index}")),
            mem_used: mem.as_ref().map_or(0, |m| m.used),
            mem_total: mem.as_ref().map_or(0, |m| m.total),
            util_pct: device.utilization_rates().ok().map(|u| f64::from(u.gpu)),
            pcie_tx: pcie(PcieUtilCounter::Send),
            pcie_rx: pcie(PcieUtilCounter::Receive),
            pcie_gen: device.current_pcie_link_gen().ok(),
            pcie_width: device.current_pcie_link_width().ok(),
        }
    }
}

impl GpuSource for NvmlSource {
    fn sample(&mut self) -> Result<Vec<GpuSample>, String> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| format!("NVML: {}", crate::fsx::one_line(e)))?;
        Ok((0..count).map(|i| self.read_device(i)).collect())
    }
}

/// One GPU's used memory as the driver reports it (NVML: every process's
/// allocations and contexts on that GPU), for a run to measure its device.
pub struct DeviceUsed {
    source: NvmlSource,
    index: u32,
}

impl DeviceUsed {
    /// NVML for the GPU of candle's `cuda:N`; None on the CPU or without a
    /// driver (a run then has no measured device memory, and says so).
    pub fn open(device: &candle_core::Device) -> Option<Self> {
        let candle_core::DeviceLocation::Cuda { gpu_id } = device.location() else {
            return None;
        };
        let source = NvmlSource::open().ok()?;
        Some(Self {
            source,
            index: gpu_id as u32,
        })
    }

    /// Used bytes now.
    pub fn used(&self) -> Option<u64> {
        let d = self.source.nvml.device_by_index(self.index).ok()?;
        d.memory_info().ok().map(|m| m.used)
    }
}

/// The machine's GPU source, or why there is none ("no NVIDIA driver: …").
pub fn open_gpu_source() -> Result<Box<dyn GpuSource>, String> {
    NvmlSource::open().map(|s| Box::new(s) as Box<dyn GpuSource>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_driver_is_a_reason_not_a_panic() {
        // On a machine with a driver this opens a real source instead; both
        // outcomes are fine, but a failure must say what is missing.
        match open_gpu_source() {
            Ok(mut source) => {
                let gpus = source.sample();
                assert!(gpus.is_ok(), "{gpus:?}");
            }
            Err(reason) => {
                assert!(
                    reason.starts_with("no NVIDIA") || reason.starts_with("NVML"),
                    "{reason}"
                );
                assert!(!reason.contains('\n'), "{reason}");
            }
        }
    }
}
