//! The inventory's state on SQLite.

use inventory_generated::runtime::rusqlite::{Connection, OptionalExtension};
use inventory_generated::{
    ApplyContext, InventoryError, InventoryService, InventoryServiceError, InventoryStore,
};

/// The store's one table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stock;

fn fault(e: impl std::fmt::Display) -> InventoryServiceError {
    InventoryServiceError::Fault(e.to_string())
}

impl InventoryStore for Stock {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, level INTEGER NOT NULL)",
        )
        .map_err(|e| e.to_string())
    }

    fn command<R>(
        &self,
        conn: &Connection,
        _ctx: &ApplyContext,
        f: impl FnOnce(&mut dyn InventoryService) -> Result<R, InventoryServiceError>,
    ) -> Result<R, InventoryServiceError> {
        f(&mut Levels(conn))
    }

    fn query<R>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&dyn InventoryService) -> Result<R, InventoryServiceError>,
    ) -> Result<R, InventoryServiceError> {
        f(&Levels(conn))
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        inventory_generated::runtime::api::local::digest_tables(conn, &[("stock", "sku")])
            .map_err(|e| e.to_string())
    }
}

struct Levels<'c>(&'c Connection);

impl Levels<'_> {
    fn set(&mut self, sku: &str, level: u64) -> Result<u64, InventoryServiceError> {
        self.0
            .execute(
                "INSERT INTO stock (sku, level) VALUES (?1, ?2)
                 ON CONFLICT (sku) DO UPDATE SET level = ?2",
                (sku, level as i64),
            )
            .map_err(fault)?;
        Ok(level)
    }
}

impl InventoryService for Levels<'_> {
    fn receive(
        &mut self,
        _ctx: &ApplyContext,
        sku: String,
        count: u64,
    ) -> Result<u64, InventoryServiceError> {
        let level = self.level(sku.clone())?;
        self.set(&sku, level.saturating_add(count))
    }

    fn ship(
        &mut self,
        _ctx: &ApplyContext,
        sku: String,
        count: u64,
    ) -> Result<u64, InventoryServiceError> {
        let level = self.level(sku.clone())?;
        if level < count {
            return Err(InventoryError::OutOfStock(format!("{sku}: {level} in stock")).into());
        }
        self.set(&sku, level - count)
    }

    fn level(&self, sku: String) -> Result<u64, InventoryServiceError> {
        self.0
            .query_row("SELECT level FROM stock WHERE sku = ?1", [sku], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|l| l.unwrap_or(0) as u64)
            .map_err(fault)
    }
}
