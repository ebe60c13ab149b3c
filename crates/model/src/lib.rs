//! Resource types (Calico v3 compatible), defaults, validation, the selector language, YAML/JSON documents.
