//! Options whose sizes cannot fit in memory are refused before anything
//! runs, with what they would need: allocating first would abort the
//! process (or wake the kernel's out-of-memory killer) with no message
//! that names the option.

use super::error::CliError;

/// Bytes the kernel says can be allocated without swapping
/// (`MemAvailable` in `/proc/meminfo`); `None` where it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in GiB with one decimal, for messages.
fn gib(bytes: u128) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// An error naming `what` when `needed` bytes (`None`: more than can be
/// counted) exceed what this machine has available. The comparison is for
/// memory on the host (`host`: a CPU backend); otherwise, and on a machine
/// whose available memory cannot be read, only sizes that overflow are
/// refused.
pub fn ensure_fits(what: &str, needed: Option<u128>, host: bool) -> Result<(), CliError> {
    let Some(needed) = needed.filter(|&n| n <= u128::from(u64::MAX)) else {
        return Err(CliError::Input(format!(
            "{what} need more memory than this machine can address; lower them"
        )));
    };
    match available_bytes().filter(|_| host) {
        Some(available) if needed > u128::from(available) => Err(CliError::Input(format!(
            "{what} need at least {} of memory, more than the {} available; lower them",
            gib(needed),
            gib(u128::from(available))
        ))),
        _ => Ok(()),
    }
}

/// A lower bound on the bytes one forward pass of `rows` × `seq_len` tokens
/// holds at once (one block's activations and attention in f32), for
/// options that set the batch of live runs.
pub fn forward_bytes(dims: &hooks_model::ModelDims, rows: usize, seq_len: usize) -> Option<u128> {
    let tokens = (rows as u128).checked_mul(seq_len as u128)?;
    let per_token = 3 * dims.d_model as u128 + 3 * dims.d_mlp as u128;
    let attention = (rows as u128)
        .checked_mul(dims.n_head as u128)?
        .checked_mul((seq_len as u128).checked_mul(seq_len as u128)?)?
        .checked_mul(2)?;
    tokens
        .checked_mul(per_token)?
        .checked_add(attention)?
        .checked_mul(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_machine_are_refused_with_what_they_need() {
        let err = ensure_fits("--latents 7", None, false).unwrap_err();
        assert_eq!(err.exit_code(), super::super::exit::INVALID_INPUT);
        assert!(err.to_string().contains("--latents 7"), "{err}");
        if let Some(available) = available_bytes() {
            let twice = Some(u128::from(available) * 2);
            let err = ensure_fits("--buffer 9", twice, true).unwrap_err();
            assert!(err.to_string().contains("--buffer 9"), "{err}");
            assert!(err.to_string().contains("available"), "{err}");
            ensure_fits("--buffer 9", Some(1 << 20), true).unwrap();
            // Device memory is not the host's.
            ensure_fits("--buffer 9", twice, false).unwrap();
        }
    }
}
