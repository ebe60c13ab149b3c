//! Property test: printing a selector and parsing it back gives the same
//! expression, and evaluation agrees.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tabby_model::selector::{Expr, parse};

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("rack".to_string()),
        Just("kubernetes.io/hostname".to_string()),
        Just("route-reflector".to_string()),
        "[a-z][a-z0-9_.-]{0,6}[a-z0-9]",
    ]
    .prop_filter("not a keyword", |k| {
        !matches!(
            k.as_str(),
            "in" | "not" | "has" | "all" | "contains" | "starts" | "ends"
        )
    })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]{0,4}", "[ -~&&[^\"]]{0,6}", "[ -~&&[^']]{0,6}"]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), prop::collection::vec(value(), 0..3)).prop_map(|(k, v)| Expr::In(k, v)),
        (key(), prop::collection::vec(value(), 0..3)).prop_map(|(k, v)| Expr::NotIn(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), "[a-z0-9]{0,3}", 0..4)
}

proptest! {
    #[test]
    fn print_then_parse_is_identity(e in expr(), l in labels()) {
        let text = e.to_string();
        let back = parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        prop_assert_eq!(&back, &e, "printed as {}", text);
        prop_assert_eq!(back.matches(&l), e.matches(&l));
    }

    #[test]
    fn parser_never_panics(s in "[ -~]{0,40}") {
        let _ = parse(&s);
    }
}
