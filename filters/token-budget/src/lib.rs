//! token-budget (being built).
