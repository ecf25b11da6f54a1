
mod retention;
mod alerts;
mod artifact;
mod support;
mod verify_mode;
mod backup_mode;
mod info_mode;
mod rollback_mode;
