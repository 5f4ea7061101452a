//! svgen-eval (filled in by its issue).
