//! Integration tests of the real `cairn` binary: the controller process is
//! started on loopback with a temporary data directory and driven over
//! HTTP with `cairn-client`.

mod cli;
mod envelope;
mod harness;
mod nodes;
mod packaging;
mod placement;
mod resource_groups;
mod shared;
mod sigkill;
