//! Which libtorch device a run uses.
use crate::config::DeviceChoice;
use tch::Device;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("CUDA was requested (device = \"cuda\") but is not available on this machine")]
    NoCuda,
}

/// Picks the device a config asks for.
pub fn pick_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cuda => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(DeviceError::NoCuda)
            }
        }
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for the device's queued work, so that wall-clock timings measure it (CUDA is
/// asynchronous; the CPU needs nothing).
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}
