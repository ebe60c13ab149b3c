//! Manifest files: multi-document YAML (`---` separated) or JSON (one or
//! more objects, or an array), where a document may also be a `List`
//! (`kind: List` or `kind: IPPoolList`, with `items`), as `kubectl get -o
//! yaml` and `calicoctl get -o yaml` write them.
//!
//! [`parse_manifest`] reads every document and checks each one on its own;
//! it returns all resources or, if any document is wrong, every error found
//! (each naming the file, the document, its kind and name, and the field).
//! Checks across documents and against stored state (overlapping pools,
//! immutable fields) are the store's job.

use serde_json::Value;

use crate::error::{DocumentError, DocumentProblem, DocumentRef, FieldError};
use crate::resource::Resource;

/// A resource read from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct ManifestEntry {
    /// The document (and list item) it came from.
    pub doc: DocumentRef,
    /// The resource, already checked on its own.
    pub resource: Resource,
}

/// One raw document: its tree and where it starts.
struct RawDocument {
    index: usize,
    line: usize,
    value: Result<Value, String>,
}

fn split_yaml(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    let mut has_content = false;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        let is_end = line == "..." || line.starts_with("... ");
        if is_marker || is_end {
            if has_content {
                docs.push((start_line, std::mem::take(&mut current)));
            }
            current.clear();
            has_content = false;
            start_line = i + 2;
            if is_marker {
                let rest = line[3..].trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    current.push_str(rest);
                    current.push('\n');
                    has_content = true;
                    start_line = i + 1;
                }
            }
            continue;
        }
        let t = line.trim();
        if !has_content && (t.is_empty() || t.starts_with('#')) {
            // Leading blank lines and comments: the document starts later.
            current.push('\n');
            if current.trim().is_empty() {
                current.clear();
                start_line = i + 2;
            }
            continue;
        }
        has_content = true;
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        docs.push((start_line, current));
    }
    docs
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

fn read_documents(text: &str) -> Vec<RawDocument> {
    let first = text.trim_start().chars().next();
    if matches!(first, Some('{') | Some('[')) {
        let json = read_json_documents(text);
        // `{apiVersion: ...}` is YAML flow style, not JSON: read it as YAML.
        let flow_yaml = json.len() == 1 && json[0].value.is_err();
        if !flow_yaml {
            return json;
        }
    }
    read_yaml_documents(text)
}

fn read_json_documents(text: &str) -> Vec<RawDocument> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut index = 0;
    loop {
        let offset = stream.byte_offset();
        let skipped = text[offset..].len() - text[offset..].trim_start().len();
        let line = line_of(text, offset + skipped);
        match stream.next() {
            None => break,
            Some(Ok(Value::Array(items))) => {
                for v in items {
                    index += 1;
                    out.push(RawDocument {
                        index,
                        line,
                        value: Ok(v),
                    });
                }
            }
            Some(Ok(v)) => {
                index += 1;
                out.push(RawDocument {
                    index,
                    line,
                    value: Ok(v),
                });
            }
            Some(Err(e)) => {
                index += 1;
                out.push(RawDocument {
                    index,
                    line: e.line(),
                    value: Err(format!("{e}")),
                });
                break;
            }
        }
    }
    out
}

fn read_yaml_documents(text: &str) -> Vec<RawDocument> {
    let mut out = Vec::new();
    for (line, chunk) in split_yaml(text) {
        // Blank lines in front keep the parser's line numbers those of the file.
        let padded = format!("{}{chunk}", "\n".repeat(line.saturating_sub(1)));
        let value = serde_saphyr::from_str::<Value>(&padded).map_err(|e| e.to_string());
        if matches!(value, Ok(Value::Null)) {
            continue;
        }
        out.push(RawDocument {
            index: out.len() + 1,
            line,
            value,
        });
    }
    out
}

fn kind_and_name(v: &Value) -> (Option<String>, Option<String>) {
    let kind = v.get("kind").and_then(Value::as_str).map(str::to_string);
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    (kind, name)
}

fn is_list(v: &Value) -> bool {
    v.get("items").is_some()
        && v.get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "List" || k.ends_with("List"))
}

/// Parses and checks every document of a manifest. `source` names the file
/// in error messages.
pub fn parse_manifest(source: &str, text: &str) -> Result<Vec<ManifestEntry>, Vec<DocumentError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for raw in read_documents(text) {
        let mut doc = DocumentRef {
            source: source.to_string(),
            index: raw.index,
            item: None,
            line: raw.line,
            kind: None,
            name: None,
        };
        let value = match raw.value {
            Ok(v) => v,
            Err(m) => {
                errors.push(DocumentError {
                    doc,
                    problem: DocumentProblem::Syntax(m),
                });
                continue;
            }
        };
        (doc.kind, doc.name) = kind_and_name(&value);
        if is_list(&value) {
            let list_kind = doc.kind.clone().unwrap_or_default();
            let item_kind = list_kind.strip_suffix("List").unwrap_or("").to_string();
            let api = value.get("apiVersion").cloned();
            let Some(items) = value.get("items").and_then(Value::as_array) else {
                errors.push(DocumentError {
                    doc,
                    problem: DocumentProblem::Fields(vec![FieldError::new(
                        "items",
                        "a List's items must be a sequence",
                    )]),
                });
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let mut item = item.clone();
                if let Some(m) = item.as_object_mut() {
                    // calicoctl's `IPPoolList` items may leave out kind/apiVersion.
                    if !item_kind.is_empty() && !m.contains_key("kind") {
                        m.insert("kind".into(), Value::String(item_kind.clone()));
                    }
                    if let (false, Some(a)) = (m.contains_key("apiVersion"), &api) {
                        m.insert("apiVersion".into(), a.clone());
                    }
                }
                let (kind, name) = kind_and_name(&item);
                let item_doc = DocumentRef {
                    item: Some(i + 1),
                    kind,
                    name,
                    ..doc.clone()
                };
                check_one(item_doc, item, &mut entries, &mut errors);
            }
            continue;
        }
        check_one(doc, value, &mut entries, &mut errors);
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

fn check_one(
    doc: DocumentRef,
    value: Value,
    entries: &mut Vec<ManifestEntry>,
    errors: &mut Vec<DocumentError>,
) {
    let resource = match Resource::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            errors.push(DocumentError {
                doc,
                problem: DocumentProblem::Fields(vec![e]),
            });
            return;
        }
    };
    if let Err(v) = resource.check() {
        errors.push(DocumentError {
            doc,
            problem: DocumentProblem::Fields(v.errors),
        });
        return;
    }
    entries.push(ManifestEntry { doc, resource });
}

/// Renders resources as YAML, `---` between documents.
pub fn to_yaml(resources: &[Resource]) -> String {
    let mut out = String::new();
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(&r.to_value()).unwrap_or_default());
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}
