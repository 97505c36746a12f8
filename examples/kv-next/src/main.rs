//! `kv-next node ...`: one node of the key-value store's next version.

fn main() -> std::process::ExitCode {
    kv_next::node_main("kv-next", &kv_next_generated::KvNode(kv_next::NextTables))
}
