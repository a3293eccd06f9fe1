//! provider-fallback (being built).
