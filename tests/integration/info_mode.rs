//! info mode (WIP)
