//! Fault and distance labs for tests, chaos runs and benchmarks: nodes in
//! network namespaces whose links can be cut or made lossy ([`netns`]), and a userspace link
//! with a one-way delay ([`delay`]). Not a cargo feature: it needs no dependency, and
//! `LocalCluster` (behind every service's `cluster up`) can place its nodes in a lab.

pub mod delay;
pub mod netns;
