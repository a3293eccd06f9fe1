//! What the token-budget tests read back from shared data.

use crate::host::Shared;

/// Every budget record in shared data as (used, reserved, reserved_prev), decoded from the
/// 48-byte layout the README documents (six little-endian u64s; these are the 4th to 6th).
pub fn records(shared: &Shared) -> Vec<(u64, u64, u64)> {
    shared
        .shared_keys()
        .iter()
        .filter(|k| k.starts_with("tb.s.") || k.starts_with("tb.o."))
        .filter_map(|k| {
            let v = shared.shared_value(k)?;
            let word = |i: usize| Some(u64::from_le_bytes(v.get(i * 8..i * 8 + 8)?.try_into().ok()?));
            if v.len() == 48 { Some((word(3)?, word(4)?, word(5)?)) } else { None }
        })
        .collect()
}

/// Waits, when fewer than `need` seconds are left in the current epoch-aligned window of
/// `window_s` seconds, until the next window has begun, so that a test which counts tokens
/// against one window (the filter's and the rate limit service's are both aligned to the Unix
/// epoch) does not see its count split across two. This waits for a wall-clock boundary, not
/// for something to become ready.
pub fn clear_of_window_edge(window_s: u64, need: std::time::Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let into = std::time::Duration::from_nanos((now.as_nanos() % (u128::from(window_s) * 1_000_000_000)) as u64);
    let left = std::time::Duration::from_secs(window_s).saturating_sub(into);
    if left < need {
        std::thread::sleep(left + std::time::Duration::from_millis(100));
    }
}
