//! Label and field selectors: parsing the query-string syntax and matching
//! objects. Pure logic; which field labels a kind accepts is decided by the
//! caller (see `http.rs`), since that depends on the kind and server version.

use std::collections::BTreeSet;

use serde_json::Value;

/// One `field=value` / `field!=value` term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

/// Parses `a=b,c!=d` (also `==`). Backslash escapes `,`, `=`, `!` and `\`.
pub fn parse_field_selector(text: &str) -> Result<FieldSelector, String> {
    let mut terms = Vec::new();
    for part in split_unescaped(text, ',') {
        if part.trim().is_empty() {
            continue;
        }
        let bad = || format!("invalid selector: '{text}'; can't understand '{part}'");
        let (field, value, equal) = if let Some(i) = find_unescaped(&part, "!=") {
            (&part[..i], &part[i + 2..], false)
        } else if let Some(i) = find_unescaped(&part, "==") {
            (&part[..i], &part[i + 2..], true)
        } else if let Some(i) = find_unescaped(&part, "=") {
            (&part[..i], &part[i + 1..], true)
        } else {
            return Err(bad());
        };
        if field.trim().is_empty() {
            return Err(bad());
        }
        terms.push(FieldTerm {
            field: field.trim().to_string(),
            value: unescape(value.trim()),
            equal,
        });
    }
    Ok(FieldSelector { terms })
}

impl FieldSelector {
    /// True when every term holds for `obj`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(obj, &t.field) == t.value) == t.equal)
    }

    /// The exact name required by a `metadata.name=` term, if any.
    pub fn required_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == "metadata.name")
            .map(|t| t.value.as_str())
    }
}

/// The string value of a field label on an object: dotted JSON path, with
/// booleans and numbers printed, and "" when absent (what the CRD
/// `selectableFields` docs specify for absent fields).
pub fn field_value(obj: &Value, label: &str) -> String {
    // core/v1 Event's "source" label means source.component.
    let path = if label == "source" {
        "source.component"
    } else {
        label
    };
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelReq {
    Exists(String),
    NotExists(String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub reqs: Vec<LabelReq>,
}

/// Parses equality-based (`a=b`, `a==b`, `a!=b`) and set-based (`a in (x,y)`,
/// `a notin (x)`, `a`, `!a`) requirements, comma-separated.
pub fn parse_label_selector(text: &str) -> Result<LabelSelector, String> {
    let mut reqs = Vec::new();
    for part in split_top_level(text) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        reqs.push(parse_label_req(part).ok_or_else(|| {
            format!("unable to parse requirement: found '{part}' in label selector '{text}'")
        })?);
    }
    Ok(LabelSelector { reqs })
}

fn parse_label_req(part: &str) -> Option<LabelReq> {
    let one = |v: &str| BTreeSet::from([v.trim().to_string()]);
    if let Some((k, v)) = part.split_once("!=") {
        return Some(LabelReq::NotIn(k.trim().to_string(), one(v)));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Some(LabelReq::In(k.trim().to_string(), one(v)));
    }
    if let Some(key) = part.strip_prefix('!') {
        return Some(LabelReq::NotExists(key.trim().to_string()));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 1 {
        return Some(LabelReq::Exists(words[0].to_string()));
    }
    let rest = words[1].trim_start();
    let (negate, list) = if let Some(l) = rest.strip_prefix("notin") {
        (true, l)
    } else {
        (false, rest.strip_prefix("in")?)
    };
    let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let values = inner.split(',').map(|v| v.trim().to_string()).collect();
    let key = words[0].to_string();
    Some(if negate {
        LabelReq::NotIn(key, values)
    } else {
        LabelReq::In(key, values)
    })
}

impl LabelSelector {
    /// True when every requirement holds for the object's labels.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|req| match req {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vals) => get(k).is_some_and(|v| vals.contains(v)),
            LabelReq::NotIn(k, vals) => get(k).is_none_or(|v| !vals.contains(v)),
        })
    }
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        let last = parts.last_mut().expect("parts is never empty");
        if escaped {
            last.push('\\');
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    parts
}

fn find_unescaped(text: &str, pat: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..text.len()).find(|&i| text[i..].starts_with(pat) && (i == 0 || bytes[i - 1] != b'\\'))
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_selector_parses_and_matches() {
        let sel = parse_field_selector("spec.nodeName=node-1,metadata.name!=b").unwrap();
        assert_eq!(sel.terms.len(), 2);
        let a = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "node-1"}});
        let b = json!({"metadata": {"name": "b"}, "spec": {"nodeName": "node-1"}});
        let c = json!({"metadata": {"name": "c"}, "spec": {}});
        assert!(sel.matches(&a));
        assert!(!sel.matches(&b));
        assert!(!sel.matches(&c));
        assert!(parse_field_selector("spec.nodeName==x").unwrap().terms[0].equal);
        assert!(parse_field_selector("nonsense").is_err());
        assert_eq!(
            parse_field_selector("metadata.name=x")
                .unwrap()
                .required_name(),
            Some("x")
        );
    }

    #[test]
    fn absent_field_is_empty_string() {
        let sel = parse_field_selector("spec.nodeName=").unwrap();
        assert!(sel.matches(&json!({"spec": {}})));
        assert_eq!(field_value(&json!({"spec": {"x": true}}), "spec.x"), "true");
    }

    #[test]
    fn label_selector_set_and_equality() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app,tier",
            "!missing",
        ];
        for text in yes {
            assert!(parse_label_selector(text).unwrap().matches(&obj), "{text}");
        }
        for text in [
            "app=db",
            "app in (db)",
            "missing",
            "!app",
            "app notin (web)",
        ] {
            assert!(!parse_label_selector(text).unwrap().matches(&obj), "{text}");
        }
        assert_eq!(
            parse_label_selector("a in (x,y),b").unwrap().reqs.len(),
            2,
            "commas inside parentheses do not split"
        );
    }
}
