//! `inventory`: `node`, `call`, `admin`, `top` and `cluster up`, from the runtime.

fn main() -> std::process::ExitCode {
    inventory_generated::runtime::cli::main(
        "inventory",
        "Stock levels of a warehouse, replicated.",
        &inventory_generated::InventoryNode(inventory::Stock),
        inventory_generated::cli::main,
    )
}
