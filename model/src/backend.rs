//! Backends: Flex (the default CPU backend), NdArray, and CUDA behind the
//! `cuda` feature.

/// The default CPU backend.
pub type Cpu = burn_flex::Flex;
/// The second CPU backend, used in tests.
pub type NdArray = burn_ndarray::NdArray;
/// Autodiff over the default CPU backend.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// `value` as `To` when `From` is `To` (a backend's primitive seen through
/// a generic `B`), else `value` back. How model code gives the default CPU
/// backend a faster path without a bound in its signature.
pub(crate) fn try_cast<From: 'static, To: 'static>(value: From) -> Result<To, From> {
    let boxed: Box<dyn std::any::Any> = Box::new(value);
    match boxed.downcast::<To>() {
        Ok(to) => Ok(*to),
        Err(back) => Err(*back.downcast::<From>().expect("the value just boxed")),
    }
}

/// [`try_cast`] where the caller has checked that `From` is `To`.
pub(crate) fn cast<From: 'static, To: 'static>(value: From) -> To {
    try_cast(value).unwrap_or_else(|_| unreachable!("checked by the caller: the types are one"))
}

/// CUDA (burn-cuda), loaded at run time: building needs no CUDA toolkit.
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda;

/// The device type of [`Cuda`].
#[cfg(feature = "cuda")]
pub type CudaDevice = burn_cuda::CudaDevice;

/// Checks that a CUDA driver can be used, without panicking when none is
/// installed: burn-cuda would panic deep inside its runtime on first use.
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Result<burn_cuda::CudaDevice, crate::ModelError> {
    // The default panic hook would print `thread 'main' panicked at …` before
    // our error even though the panic is caught: silence it during the probe.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        let device = burn_cuda::CudaDevice::default();
        let t = burn::tensor::Tensor::<Cuda, 1>::from_floats([1.0f32, 2.0], &device);
        let sum = t.sum().into_scalar();
        (device, sum)
    });
    std::panic::set_hook(previous);
    match probe {
        Ok((device, sum)) if (sum - 3.0).abs() < 1e-6 => Ok(device),
        Ok(_) => Err(crate::ModelError::NoCuda(
            "a test computation on the GPU gave a wrong result".into(),
        )),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA runtime failed to start".into());
            Err(crate::ModelError::NoCuda(format!(
                "{why} (is an NVIDIA driver installed and a GPU visible?)"
            )))
        }
    }
}
