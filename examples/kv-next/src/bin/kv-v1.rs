//! `kv-v1 node ...`: one node of the key-value store as it was (the `kv` example's store and
//! generated crate), built beside `kv-next` so that the upgrade tests have both builds.

fn main() -> std::process::ExitCode {
    kv_next::node_main("kv-v1", &kv_generated::KvNode(kv::KvTables))
}
