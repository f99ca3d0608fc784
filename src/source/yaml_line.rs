//! Where a field stands in a YAML document: the line of the value at a
//! dotted path such as `spec.mounts[1].source`. A parsed `Value` carries no
//! positions, but serde_yaml marks every error with the position of the
//! event where it arose; so the document is walked along the path, and a
//! deliberate error raised at the value tells its line.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `spec.mounts[1].source` → key spec, key mounts, index 1, key source.
fn steps(path: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key.to_owned()));
        }
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            out.push(Step::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Visitor methods that pass over a scalar: it is not what is looked for.
macro_rules! ignore_scalars {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
    };
}

/// The message of the deliberate error; anything else is a real one.
const FOUND: &str = "rundmc: the field is here";

/// The 1-based line of the value at `path` in document `index` (0-based)
/// of `text`; `None` when the path is not there.
pub fn line_of(text: &str, index: usize, path: &str) -> Option<usize> {
    let steps = steps(path)?;
    let doc = serde_yaml::Deserializer::from_str(text).nth(index)?;
    let probe = Probe {
        rest: &steps,
        at_key: false,
    };
    match probe.deserialize(doc) {
        // serde_yaml puts the path it was at before the message.
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The 1-based line of the key of the field at `path` (which must end in a
/// key): where an unknown field is written, whatever its value spans.
pub fn line_of_key(text: &str, index: usize, path: &str) -> Option<usize> {
    let steps = steps(path)?;
    let doc = serde_yaml::Deserializer::from_str(text).nth(index)?;
    let probe = Probe {
        rest: &steps,
        at_key: true,
    };
    match probe.deserialize(doc) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// Walks down `rest`, then fails at the value it reaches (or, `at_key`,
/// at the key of the last step).
struct Probe<'a> {
    rest: &'a [Step],
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.rest.first() {
            None => d.deserialize_any(Found),
            Some(Step::Key(_)) => d.deserialize_map(self),
            Some(Step::Index(_)) => d.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some(Step::Key(want)) = self.rest.first() else {
            return Ok(());
        };
        let last = self.rest.len() == 1;
        if self.at_key && last {
            while map.next_key_seed(KeyProbe(want))?.is_some() {
                map.next_value::<IgnoredAny>()?;
            }
            return Ok(());
        }
        while let Some(key) = map.next_key::<serde_yaml::Value>()? {
            if key.as_str() == Some(want.as_str()) {
                return map.next_value_seed(Probe {
                    rest: &self.rest[1..],
                    at_key: self.at_key,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(Step::Index(want)) = self.rest.first() else {
            return Ok(());
        };
        let mut i = 0;
        while i < *want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
        seq.next_element_seed(Probe {
            rest: &self.rest[1..],
            at_key: self.at_key,
        })
        .map(drop)
    }

    // Anything else where a mapping or sequence was wanted: not there.
    ignore_scalars!();
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// Reads a mapping key, failing (so that serde_yaml marks the error with
/// the key's position) when it is the one wanted.
struct KeyProbe<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        match key == self.0 {
            true => Err(E::custom(FOUND)),
            false => Ok(()),
        }
    }

    // Keys that are not strings are not the one wanted.
    ignore_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Fails on whatever value it meets, so that serde_yaml marks the error
/// with the value's position.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: rundmc.io/v1alpha1
kind: Container
metadata:
  name: web
spec:
  rootfs: /img
  hostname: -nope
  mounts:
    - source: /srv
      destination: /data
    - {source: srv/.., destination: /x}
  limits:
    memory: 64Q
---
kind: Container
spec:
  env:
    - name: A=B
      value: x
";

    #[test]
    fn paths_are_split_into_steps() {
        assert_eq!(
            steps("spec.mounts[1].source"),
            Some(vec![
                Step::Key("spec".into()),
                Step::Key("mounts".into()),
                Step::Index(1),
                Step::Key("source".into())
            ])
        );
        assert_eq!(steps("a[0][2]").map(|s| s.len()), Some(3));
        assert_eq!(steps("a[x]"), None);
        assert_eq!(steps(""), None);
    }

    #[test]
    fn finds_the_line_of_a_field() {
        assert_eq!(line_of(DOC, 0, "spec.hostname"), Some(7));
        assert_eq!(line_of(DOC, 0, "spec.limits.memory"), Some(13));
        assert_eq!(line_of(DOC, 0, "spec.mounts[0].destination"), Some(10));
        assert_eq!(line_of(DOC, 0, "spec.mounts[1].source"), Some(11));
        assert_eq!(line_of(DOC, 0, "metadata.name"), Some(4));
        assert_eq!(line_of(DOC, 1, "spec.env[0].name"), Some(18));
    }

    #[test]
    fn finds_the_line_of_a_key() {
        let doc =
            "spec:\n  limts:\n    memory: 16Mi\n  mounts:\n    - source: /a\n      sorce: /b\n";
        assert_eq!(line_of(doc, 0, "spec.limts"), Some(3), "the value's line");
        assert_eq!(line_of_key(doc, 0, "spec.limts"), Some(2));
        assert_eq!(line_of_key(doc, 0, "spec.mounts[0].sorce"), Some(6));
        assert_eq!(line_of_key(DOC, 0, "spec.limits"), Some(12));
        assert_eq!(line_of_key(DOC, 0, "spec.nothing"), None);
    }

    #[test]
    fn a_missing_path_has_no_line() {
        assert_eq!(line_of(DOC, 0, "spec.process.args"), None);
        assert_eq!(line_of(DOC, 0, "spec.mounts[5].source"), None);
        assert_eq!(line_of(DOC, 0, "spec.rootfs.deeper"), None);
        assert_eq!(line_of(DOC, 2, "spec"), None);
    }
}
