//! Training pieces shared by both trainers.

pub mod plot;
