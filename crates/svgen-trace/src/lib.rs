//! svgen-trace (filled in by its issue).
