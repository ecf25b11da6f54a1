//! The lock on a destination: a lease object made with a conditional create.
//!
//! `<prefix>/predeploy-backup.lock` holds the owner and an expiry. A run creates it only if
//! it does not exist (S3 `If-None-Match: *`), renews it while it runs (`If-Match` on the
//! version it wrote), and deletes it at the end. Another run waits; it takes the lease over
//! only once it has expired (a run that was killed), again conditionally, so of two runs
//! that both see it expired exactly one wins. A server without conditional writes is an
//! error that says so (`lock: none` goes without), never silent racing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Condition, Store, StoreError, Version};

/// The lease object's key, relative to the destination's prefix.
pub const KEY: &str = "predeploy-backup.lock";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Body {
    owner: String,
    /// What the owner is, for the message another run prints (the Actions run, host, pid).
    holder: String,
    expires_at: DateTime<Utc>,
}

/// Why the lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another run holds the lock on {url} ({holder}, until {until}); waited {waited:?}. It is released when that run ends, or taken over once it expires")]
    Busy {
        url: String,
        holder: String,
        until: DateTime<Utc>,
        waited: Duration,
    },
    #[error("the destination {url} does not support conditional writes (If-None-Match), so two runs could interleave: use a server that does (AWS S3, MinIO, R2, SeaweedFS, ...), or set lock: none if only one run can ever write there")]
    Unsupported {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::Classify for LeaseError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Environment
    }
}

/// A held lease; renewed in the background until [`Lease::release`] (or drop).
pub struct Lease {
    store: Store,
    owner: String,
    lost: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease, waiting up to `wait` for another holder; `ttl` is how long it is
    /// valid without a renewal (renewed every `ttl / 3`). `on_wait` is called once when
    /// the lease is busy (the caller logs it).
    pub async fn acquire(
        store: &Store,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        mut on_wait: impl FnMut(&str),
    ) -> Result<Lease, LeaseError> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let started = std::time::Instant::now();
        let body = |owner: &str| -> Vec<u8> {
            serde_json::to_vec(&Body {
                owner: owner.into(),
                holder: holder.into(),
                expires_at: Utc::now()
                    + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1)),
            })
            .expect("lease body serializes")
        };
        let mut told = false;
        loop {
            let created = match store.put_if(KEY, body(&owner), Condition::Absent).await {
                Ok(c) => c,
                Err(e) if is_unsupported(&e) => {
                    return Err(LeaseError::Unsupported {
                        url: store.url_of(KEY),
                        source: e,
                    })
                }
                Err(e) => return Err(e.into()),
            };
            if created {
                break;
            }
            let Some((bytes, version)) = store.get_small(KEY).await? else {
                continue; // released meanwhile
            };
            let current: Option<Body> = serde_json::from_slice(&bytes).ok();
            let (until, who) = current
                .as_ref()
                .map(|b| (b.expires_at, b.holder.clone()))
                .unwrap_or((DateTime::<Utc>::MIN_UTC, "unreadable lease".into()));
            if until < Utc::now() {
                // Expired (its run was killed): take it over, conditionally.
                if store
                    .put_if(KEY, body(&owner), Condition::At(&version))
                    .await?
                {
                    break;
                }
                continue;
            }
            if started.elapsed() >= wait {
                return Err(LeaseError::Busy {
                    url: store.url_of(KEY),
                    holder: who,
                    until,
                    waited: started.elapsed(),
                });
            }
            if !told {
                on_wait(&format!(
                    "Waiting for the lock on {}: held by {who} until {until}",
                    store.url()
                ));
                told = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renew = {
            let store = store.clone();
            let owner = owner.clone();
            let holder = holder.to_string();
            let lost = lost.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let ok = async {
                        let (bytes, version): (Vec<u8>, Version) =
                            store.get_small(KEY).await.ok()??;
                        let b: Body = serde_json::from_slice(&bytes).ok()?;
                        if b.owner != owner {
                            return None;
                        }
                        let next = serde_json::to_vec(&Body {
                            owner: owner.clone(),
                            holder: holder.clone(),
                            expires_at: Utc::now()
                                + chrono::Duration::from_std(ttl)
                                    .unwrap_or(chrono::Duration::hours(1)),
                        })
                        .ok()?;
                        store
                            .put_if(KEY, next, Condition::At(&version))
                            .await
                            .ok()?
                            .then_some(())
                    }
                    .await;
                    if ok.is_none() {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        Ok(Lease {
            store: store.clone(),
            owner,
            lost,
            renew,
        })
    }

    /// False once a renewal failed (the lease may have been taken over).
    pub fn held(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and deletes the lease if it is still ours.
    pub async fn release(self) {
        self.renew.abort();
        if let Ok(Some((bytes, _))) = self.store.get_small(KEY).await {
            if serde_json::from_slice::<Body>(&bytes).is_ok_and(|b| b.owner == self.owner) {
                let _ = self.store.remove(KEY).await;
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

fn is_unsupported(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Backend {
            source_kind: super::BackendKind::Unsupported,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_expired_leases_are_taken_over() {
        let s = super::super::mem::open();
        let a = Lease::acquire(&s, "a", Duration::from_secs(60), Duration::ZERO, |_| {})
            .await
            .unwrap();
        let mut waited = vec![];
        let e = Lease::acquire(
            &s,
            "b",
            Duration::from_secs(60),
            Duration::from_millis(10),
            |m| waited.push(m.to_string()),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(e, LeaseError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("(a, until"), "{e}");
        assert!(a.held());
        a.release().await;
        let b = Lease::acquire(&s, "b", Duration::from_millis(1), Duration::ZERO, |_| {})
            .await
            .unwrap();
        b.renew.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // b expired without renewal: c takes it over.
        let c = Lease::acquire(&s, "c", Duration::from_secs(60), Duration::ZERO, |_| {})
            .await
            .unwrap();
        let (bytes, _) = s.get_small(KEY).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"c\""));
        b.release().await; // not b's any more: left alone
        assert!(s.get_small(KEY).await.unwrap().is_some());
        c.release().await;
        assert!(s.get_small(KEY).await.unwrap().is_none());
    }
}
