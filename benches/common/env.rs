//! The knobs of the plain benchmark programs: sizes and repeats read from the environment.

/// The number in the environment variable `name`, or `default` if it is unset or not a number.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
