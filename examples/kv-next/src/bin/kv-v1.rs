//! `kv-v1`: the key-value store as it was (the `kv` example's store and generated crate), built
//! beside `kv-next` so that the upgrade tests have both builds.

fn main() -> std::process::ExitCode {
    runtime::cli::main(
        "kv-v1",
        "The key-value store as it was.",
        &kv_generated::KvNode(kv::KvTables),
        kv_generated::cli::main,
    )
}
