//! The key-value store's next version (`schema/kv.yaml` here): `put` takes `if_absent`, and
//! `append` is new. It keeps the old version's tables and delegates every old operation to the
//! old store ([`kv::KvState`]), as an upgraded service would keep its code: what it adds is all
//! there is below.
//!
//! Its tests (`tests/upgrade.rs`) run the old build (`kv-v1`) and this one (`kv-next`) on the
//! same data: the new build replays the old one's log and snapshots to the same digest, and a
//! cluster upgraded node by node refuses the new operation until every member runs it.

#![warn(missing_docs)]

use kv_generated::{KvService as _, KvStore as _};
use kv_next_generated::{ApplyContext, Entry, KvError, KvService, KvServiceError, KvStore};
use runtime::rusqlite::Connection;
use runtime::wire::error::ServiceError;

/// The store's tables: the old version's, unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct NextTables;

impl KvStore for NextTables {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        kv::KvTables.init(conn)
    }

    fn command<R>(
        &self,
        conn: &Connection,
        _ctx: &ApplyContext,
        f: impl FnOnce(&mut dyn KvService) -> Result<R, KvServiceError>,
    ) -> Result<R, KvServiceError> {
        f(&mut NextState(kv::KvState::new(conn)))
    }

    fn query<R>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&dyn KvService) -> Result<R, KvServiceError>,
    ) -> Result<R, KvServiceError> {
        f(&NextState(kv::KvState::new(conn)))
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        kv::KvTables.digest(conn)
    }
}

/// The store as one command or query of the new version sees it.
#[derive(Debug)]
pub struct NextState<'c>(kv::KvState<'c>);

/// The old version's refusal as the new version's (the same kinds).
fn from_old<T>(result: Result<T, kv_generated::KvServiceError>) -> Result<T, KvServiceError> {
    result.map_err(|e| match e {
        ServiceError::Domain(kv_generated::KvError::Conflict(m)) => KvError::Conflict(m).into(),
        ServiceError::Domain(kv_generated::KvError::InvalidArgument(m)) => {
            KvError::InvalidArgument(m).into()
        }
        ServiceError::Fault(fault) => ServiceError::Fault(fault),
    })
}

fn entry(old: kv_generated::Entry) -> Entry {
    Entry {
        key: old.key,
        value: old.value,
        revision: old.revision,
    }
}

impl KvService for NextState<'_> {
    fn put(
        &mut self,
        ctx: &ApplyContext,
        key: String,
        value: String,
        if_absent: bool,
    ) -> Result<u64, KvServiceError> {
        if if_absent && from_old(self.0.get(key.clone()))?.is_some() {
            return Err(KvError::Conflict(format!("`{key}` exists")).into());
        }
        from_old(self.0.put(ctx, key, value))
    }

    fn delete(&mut self, ctx: &ApplyContext, key: String) -> Result<bool, KvServiceError> {
        from_old(self.0.delete(ctx, key))
    }

    fn compare_and_swap(
        &mut self,
        ctx: &ApplyContext,
        key: String,
        expected_revision: u64,
        value: String,
    ) -> Result<u64, KvServiceError> {
        from_old(self.0.compare_and_swap(ctx, key, expected_revision, value))
    }

    fn get(&self, key: String) -> Result<Option<Entry>, KvServiceError> {
        Ok(from_old(self.0.get(key))?.map(entry))
    }

    fn range(&self, prefix: String, limit: u32) -> Result<Vec<Entry>, KvServiceError> {
        Ok(from_old(self.0.range(prefix, limit))?
            .into_iter()
            .map(entry)
            .collect())
    }

    fn append(
        &mut self,
        ctx: &ApplyContext,
        key: String,
        suffix: String,
    ) -> Result<u64, KvServiceError> {
        let value = from_old(self.0.get(key.clone()))?.map_or(String::new(), |e| e.value);
        from_old(self.0.put(ctx, key, value + &suffix))
    }
}
