//! `kv`: one binary for the replicated key-value store. `node`, `call`, `cluster up`, `admin`
//! and `top` come from the runtime and the generated crate; this file is the whole glue.

fn main() -> std::process::ExitCode {
    runtime::cli::main(
        "kv",
        "A replicated key-value store.",
        &kv_generated::KvNode(kv::KvTables),
        kv_generated::cli::main,
    )
}
