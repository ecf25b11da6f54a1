//! In memory (`object_store`'s `InMemory`): the store of unit tests. Same semantics as S3
//! for what the seam uses: multipart, conditional create, If-Match.

use std::sync::Arc;

use super::Store;

/// An empty in-memory store.
pub fn open() -> Store {
    Store::new(
        Arc::new(object_store::memory::InMemory::new()),
        "",
        "mem://".into(),
    )
}
