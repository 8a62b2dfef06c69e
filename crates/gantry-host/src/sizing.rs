//! Buffer sizing helper (H9).

/// Page size every computed buffer size is a multiple of.
///
/// # Example
/// ```
/// assert_eq!(gantry_host::optimal_buffer_size(3_000_000) % gantry_host::PAGE_SIZE, 0);
/// ```
pub const PAGE_SIZE: usize = 4096;
/// Smallest size [`optimal_buffer_size`] returns: 8 KiB.
///
/// # Example
/// ```
/// use gantry_host::{MIN_BUFFER_SIZE, optimal_buffer_size};
/// assert_eq!(optimal_buffer_size(10), MIN_BUFFER_SIZE);
/// ```
pub const MIN_BUFFER_SIZE: usize = 8 * 1024;
/// Largest size [`optimal_buffer_size`] returns: 64 KiB.
///
/// # Example
/// ```
/// use gantry_host::{MAX_BUFFER_SIZE, optimal_buffer_size};
/// assert_eq!(optimal_buffer_size(1 << 40), MAX_BUFFER_SIZE);
/// ```
pub const MAX_BUFFER_SIZE: usize = 64 * 1024;

/// An I/O buffer size for an input of `input_len` bytes: 1% of the input, clamped to
/// [`MIN_BUFFER_SIZE`]..=[`MAX_BUFFER_SIZE`], rounded up to a multiple of [`PAGE_SIZE`].
/// The same as [`buffer_size_for`]`(input_len, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE)`.
///
/// # Example
/// ```
/// use gantry_host::optimal_buffer_size;
///
/// assert_eq!(optimal_buffer_size(0), 8 * 1024); // small inputs: the minimum
/// assert_eq!(optimal_buffer_size(2_000_000), 20 * 1024); // 20,000 rounded up to 5 pages
/// assert_eq!(optimal_buffer_size(u64::MAX), 64 * 1024); // large inputs: the maximum
/// ```
pub fn optimal_buffer_size(input_len: u64) -> usize {
    buffer_size_for(input_len, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE)
}

/// An I/O buffer size for an input of `input_len` bytes, by this rule:
///
/// 1. start from 1% of the input (`input_len / 100`);
/// 2. clamp it to `min..=max` (if `min > max`, `max` wins);
/// 3. round up to a multiple of [`PAGE_SIZE`], and to at least one page.
///
/// So the result is always a non-zero multiple of 4096; it exceeds `max` only when `max` is
/// not itself a multiple of 4096 (by less than a page). Overflow-safe: when rounding up would
/// pass `usize::MAX`, the result is the largest multiple of 4096 that fits.
///
/// # Example
/// ```
/// use gantry_host::buffer_size_for;
///
/// assert_eq!(buffer_size_for(1 << 30, 4096, 1 << 20), 1 << 20); // 10.7 MB clamped to 1 MiB
/// assert_eq!(buffer_size_for(500_000, 0, usize::MAX), 8192); // 5,000 rounded up
/// assert_eq!(buffer_size_for(0, 0, 0), 4096); // at least a page
/// assert_eq!(buffer_size_for(0, usize::MAX, usize::MAX), usize::MAX - 4095);
/// ```
pub fn buffer_size_for(input_len: u64, min: usize, max: usize) -> usize {
    let suggested = usize::try_from(input_len / 100).unwrap_or(usize::MAX);
    let clamped = suggested.max(min).min(max);
    clamped
        .checked_next_multiple_of(PAGE_SIZE)
        .unwrap_or(usize::MAX - usize::MAX % PAGE_SIZE)
        .max(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 1024 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn follows_the_rule(input in any::<u64>(), min in any::<usize>(), max in any::<usize>()) {
            let size = buffer_size_for(input, min, max);
            prop_assert!(size > 0 && size.is_multiple_of(PAGE_SIZE));
            let target = ((input / 100).min(usize::MAX as u64) as usize).max(min).min(max);
            if target <= usize::MAX - usize::MAX % PAGE_SIZE {
                // The smallest page multiple (and at least one page) not below the target.
                prop_assert!(size >= target);
                prop_assert!(size - target < PAGE_SIZE || size == PAGE_SIZE);
            } else {
                prop_assert_eq!(size, usize::MAX - usize::MAX % PAGE_SIZE);
            }
        }

        #[test]
        fn default_is_within_bounds(input in any::<u64>()) {
            let size = optimal_buffer_size(input);
            prop_assert!((MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&size));
            prop_assert!(size.is_multiple_of(PAGE_SIZE));
        }
    }
}
