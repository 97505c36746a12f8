//! `kv-next`: the key-value store's next version, with every command a service has (`node`,
//! `call`, `cluster up`, `admin`, `top`).

fn main() -> std::process::ExitCode {
    runtime::cli::main(
        "kv-next",
        "The key-value store's next version.",
        &kv_next_generated::KvNode(kv_next::NextTables),
        kv_next_generated::cli::main,
    )
}
