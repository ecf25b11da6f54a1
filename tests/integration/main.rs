mod alerts;
mod artifact;
mod backup_mode;
mod info_mode;
mod retention;
mod rollback_mode;
mod support;
mod verify_mode;
