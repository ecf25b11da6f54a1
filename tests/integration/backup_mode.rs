//! backup mode (WIP)
