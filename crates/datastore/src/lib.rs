//! Revisioned key-value store trait (get, list, create, compare-and-swap update, delete, watch) with SQLite and etcd v3 backends.
