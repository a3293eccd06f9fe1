//! jwt-claims (being built).
