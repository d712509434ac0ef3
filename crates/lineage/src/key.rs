//! The artifact key: the identity of a computation, known before running it.

use std::collections::BTreeMap;

use serde_json::Value;

/// Everything a stage's output may depend on.
#[derive(Debug, Clone)]
pub struct KeyIngredients<'a> {
    pub stage: &'a str,
    pub code_identity: &'a str,
    pub params: &'a Value,
    pub seed: u64,
    /// Only for stages that use a device: CPU and GPU bits differ.
    pub device: Option<&'a str>,
    /// Input name -> (label, content hash) of each artifact. The label (the
    /// upstream step's name) enters the key only for list inputs, where it
    /// names the item in the output (e.g. a model in an evaluation report);
    /// renaming the single upstream of an input changes nothing.
    pub inputs: BTreeMap<&'a str, InputHashes<'a>>,
    /// Files outside the store the stage reads (a user's data, a base model
    /// directory): (path, content digest).
    pub files: &'a [(String, String)],
}

#[derive(Debug, Clone)]
pub enum InputHashes<'a> {
    One(&'a str),
    Many(Vec<(&'a str, &'a str)>),
}

impl KeyIngredients<'_> {
    /// blake3 over the canonical JSON of the ingredients, hex.
    pub fn key(&self) -> String {
        let inputs: serde_json::Map<String, Value> = self
            .inputs
            .iter()
            .map(|(name, h)| {
                let v = match h {
                    InputHashes::One(hash) => Value::String(hash.to_string()),
                    InputHashes::Many(items) => Value::Array(
                        items.iter().map(|(label, hash)| Value::String(format!("{label}={hash}"))).collect(),
                    ),
                };
                (name.to_string(), v)
            })
            .collect();
        let mut doc = serde_json::json!({
            "stage": self.stage,
            "code": self.code_identity,
            "params": canonical(self.params),
            "seed": self.seed,
            "device": self.device,
            "inputs": inputs,
        });
        if !self.files.is_empty() {
            doc["files"] = self.files.iter().map(|(p, h)| Value::String(format!("{p}={h}"))).collect();
        }
        blake3::hash(canonical(&doc).to_string().as_bytes()).to_hex().to_string()
    }
}

/// A copy of `v` with every object's keys sorted, so equal parameters always
/// serialise to the same bytes whatever order they were written in.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Field-level differences between two parameter objects, as
/// `(dotted.path, old, new)`; `None` for a side where the field is absent.
pub fn diff_params(old: &Value, new: &Value) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    out
}

fn diff_into(prefix: &str, old: &Value, new: &Value, out: &mut Vec<(String, Option<Value>, Option<Value>)>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(&path, x, y, out),
                    (x, y) => out.push((path, x.cloned(), y.cloned())),
                }
            }
        }
        (a, b) if a != b => out.push((prefix.to_string(), Some(a.clone()), Some(b.clone()))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingredients<'a>(params: &'a Value, inputs: BTreeMap<&'a str, InputHashes<'a>>) -> KeyIngredients<'a> {
        KeyIngredients { stage: "s", code_identity: "c", params, seed: 1, device: None, inputs, files: &[] }
    }

    #[test]
    fn key_ignores_object_order_but_not_values() {
        let a = json!({"x": 1, "y": {"b": 2, "a": 3}});
        let b = json!({"y": {"a": 3, "b": 2}, "x": 1});
        let c = json!({"x": 1, "y": {"a": 3, "b": 4}});
        let ka = ingredients(&a, BTreeMap::new()).key();
        assert_eq!(ka, ingredients(&b, BTreeMap::new()).key());
        assert_ne!(ka, ingredients(&c, BTreeMap::new()).key());
    }

    #[test]
    fn key_depends_on_input_content_and_list_labels() {
        let p = json!({});
        let one = |h| ingredients(&p, [("text", InputHashes::One(h))].into()).key();
        assert_ne!(one("aa"), one("bb"));
        let many = |l| ingredients(&p, [("models", InputHashes::Many(vec![(l, "aa")]))].into()).key();
        assert_ne!(many("sft"), many("ppo"));
    }

    #[test]
    fn diff_names_fields() {
        let d = diff_params(&json!({"kl_coef": 0.02, "lr": 1}), &json!({"kl_coef": 0.05, "lr": 1, "new": true}));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "kl_coef");
        assert_eq!(d[1], ("new".to_string(), None, Some(json!(true))));
    }
}
