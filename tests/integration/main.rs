
mod retention;
mod alerts;
mod artifact;
