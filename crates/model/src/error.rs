//! Errors of the model: a field path plus what is wrong with it, and the
//! document (file, position, kind and name) the field came from.
//!
//! Every error a user can see names the document and the field, so that a
//! file with twenty documents points straight at the one line to fix.

use std::fmt;

/// One problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.peerIP` or `spec.exportV4[1].cidr`;
    /// empty when the problem is with the document as a whole.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl FieldError {
    /// A problem with the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Collects [`FieldError`]s under a path prefix while a resource is checked.
#[derive(Debug, Default)]
pub struct Problems {
    errors: Vec<FieldError>,
}

impl Problems {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with the field at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    /// Records an already-built error.
    pub fn push_error(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The recorded problems, in the order they were found.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }

    /// `Ok(())` when nothing was recorded, otherwise the problems.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                errors: self.errors,
            })
        }
    }
}

/// A resource failed validation: one or more fields are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Every problem found (never empty).
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    /// A validation error with a single problem.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError::new(path, message)],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Where a document sits: file, position in the file, and (when it could be
/// read) its kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentRef {
    /// File name as the user gave it (`-` or `<stdin>` for standard input).
    pub source: String,
    /// 1-based position of the document in the file (items of a `List`
    /// are numbered `index.item`, see [`DocumentRef::item`]).
    pub index: usize,
    /// 1-based position inside a `List` document, if the resource is one of
    /// its items.
    pub item: Option<usize>,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The document's `kind`, if it has one.
    pub kind: Option<String>,
    /// The document's `metadata.name`, if it has one.
    pub name: Option<String>,
}

impl fmt::Display for DocumentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.index)?;
        if let Some(item) = self.item {
            write!(f, " item {item}")?;
        }
        write!(f, " (line {}", self.line)?;
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, ", {k} \"{n}\"")?,
            (Some(k), None) => write!(f, ", {k}")?,
            (None, Some(n)) => write!(f, ", \"{n}\"")?,
            (None, None) => {}
        }
        f.write_str(")")
    }
}

/// A document of a manifest file could not be turned into a valid resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Which document.
    pub doc: DocumentRef,
    /// What is wrong with it.
    pub problem: DocumentProblem,
}

/// What is wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DocumentProblem {
    /// The text is not well-formed YAML or JSON.
    Syntax(String),
    /// The document parsed, but one or more fields are wrong.
    Fields(Vec<FieldError>),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            DocumentProblem::Syntax(m) => write!(f, "{}: not valid YAML or JSON: {m}", self.doc),
            DocumentProblem::Fields(errors) => {
                write!(f, "{}: ", self.doc)?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DocumentError {}

/// Joins a path prefix and a field name with a dot (no dot when the prefix is
/// empty, and none before an index like `[2]`).
pub fn join_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else if field.starts_with('[') || field.is_empty() {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}
