//! The JSON schema of a serde type, walked as the configuration reference needs it: tables and their keys, each
//! key's type, default and description.

use schemars::JsonSchema;
use serde_json::{Map, Value};

/// A default value as it is written in TOML.
pub(super) fn toml_value(value: &Value) -> String {
    fn inner(value: &Value) -> String {
        match value {
            Value::Null => "unset".to_owned(),
            Value::String(s) if s.is_empty() => "—".to_owned(),
            Value::String(s) => format!("\"{s}\""),
            Value::Array(items) => format!("[{}]", items.iter().map(inner).collect::<Vec<_>>().join(", ")),
            Value::Object(fields) => format!(
                "{{ {} }}",
                fields.iter().map(|(k, v)| format!("{k} = {}", inner(v))).collect::<Vec<_>>().join(", ")
            ),
            other => other.to_string(),
        }
    }
    match value {
        Value::Null => "unset".to_owned(),
        Value::String(s) if s.is_empty() => "—".to_owned(),
        other => format!("`{}`", inner(other)),
    }
}

pub(super) fn schema_of<T: JsonSchema>() -> Node {
    let schema = schemars::schema_for!(T).to_value();
    let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    Node { schema, defs: std::sync::Arc::new(defs) }
}

/// A place in a JSON schema, with the definitions its references point into.
#[derive(Clone)]
pub(super) struct Node {
    schema: Value,
    defs: std::sync::Arc<Map<String, Value>>,
}

/// A key's own description and default win over those of the type it refers to or wraps.
fn keep_own_words(target: &mut Value, own: &Value) {
    if let (Some(fields), Some(own)) = (target.as_object_mut(), own.as_object()) {
        for key in ["description", "default"] {
            if let Some(value) = own.get(key) {
                fields.insert(key.to_owned(), value.clone());
            }
        }
    }
}

impl Node {
    fn at(&self, schema: &Value) -> Node {
        Node { schema: schema.clone(), defs: self.defs.clone() }
    }

    /// The schema a `$ref` points at, with the referring schema's own description and default kept.
    fn resolved(&self) -> Node {
        let Some(name) = self.schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/"))
        else {
            return self.clone();
        };
        let mut target = self.defs.get(name).cloned().unwrap_or(Value::Null);
        keep_own_words(&mut target, &self.schema);
        self.at(&target).resolved()
    }

    /// The schema without its `null` alternative (an optional key).
    fn non_null(&self) -> Node {
        let node = self.resolved();
        for combinator in ["anyOf", "oneOf"] {
            if let Some(variants) = node.schema.get(combinator).and_then(Value::as_array) {
                let rest: Vec<&Value> = variants.iter().filter(|v| v.get("type") != Some(&"null".into())).collect();
                if rest.len() == 1 {
                    let mut inner = node.at(rest[0]).resolved();
                    keep_own_words(&mut inner.schema, &node.schema);
                    return inner;
                }
            }
        }
        node
    }

    pub(super) fn property(&self, name: &str) -> Node {
        let node = self.non_null();
        let property = node.schema.get("properties").and_then(|p| p.get(name)).cloned().unwrap_or(Value::Null);
        node.at(&property)
    }

    pub(super) fn is_some(&self) -> bool {
        !self.schema.is_null()
    }

    pub(super) fn properties(&self) -> Vec<(String, Node)> {
        let node = self.non_null();
        let properties = node.schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        properties.iter().map(|(name, schema)| (name.clone(), node.at(schema))).collect()
    }

    pub(super) fn required(&self, key: &str) -> bool {
        let node = self.non_null();
        node.schema.get("required").and_then(Value::as_array).is_some_and(|r| r.iter().any(|k| k == key))
    }

    pub(super) fn description(&self) -> Option<String> {
        let node = self.non_null();
        let text = [node.schema.get("title"), node.schema.get("description")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        (!text.is_empty()).then_some(text)
    }

    pub(super) fn with_description(mut self, description: Option<String>) -> Node {
        if let (Some(description), Some(fields)) = (description, self.schema.as_object_mut()) {
            fields.remove("title");
            fields.insert("description".to_owned(), Value::String(description));
        }
        self
    }

    pub(super) fn default(&self) -> Option<&Value> {
        self.schema.get("default").filter(|d| !d.is_null())
    }

    /// A table of named keys (a struct), as opposed to a value.
    pub(super) fn sub_table(&self) -> Option<Node> {
        let node = self.non_null();
        let is_table = node.schema.get("type") == Some(&"object".into()) && node.schema.get("properties").is_some();
        is_table.then_some(node)
    }

    pub(super) fn array_of_tables(&self) -> Option<Node> {
        let node = self.non_null();
        let items = node.schema.get("items")?;
        node.at(items).sub_table()
    }

    pub(super) fn item_table(&self) -> Node {
        self.array_of_tables().unwrap_or_else(|| self.clone())
    }

    /// What each of the values a key may take means, when they are a fixed set with descriptions.
    pub(super) fn value_notes(&self) -> String {
        let node = self.non_null();
        let Some(variants) = node.schema.get("oneOf").and_then(Value::as_array) else { return String::new() };
        let notes: Vec<String> = variants
            .iter()
            .filter_map(|variant| {
                let description = variant.get("description")?.as_str()?;
                let name = match variant.get("const").or_else(|| variant.get("enum").and_then(|e| e.get(0))) {
                    Some(Value::String(value)) => format!("\"{value}\""),
                    _ => variant.get("properties")?.as_object()?.keys().next()?.clone(),
                };
                let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
                Some(format!("`{name}`: {}", description.trim_end_matches('.')))
            })
            .collect();
        notes.join("; ")
    }

    /// What a value looks like: its type, or the values it may take.
    pub(super) fn kind(&self) -> String {
        let node = self.non_null();
        let schema = &node.schema;
        if let Some(kind) = schema.get("x-kind").and_then(Value::as_str) {
            return kind.to_owned();
        }
        if let Some(value) = schema.get("const") {
            return format!("`{}`", toml_value(value).trim_matches('`'));
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let values: Vec<String> = values.iter().map(|v| format!("`{}`", toml_value(v).trim_matches('`'))).collect();
            return values.join(" or ");
        }
        for combinator in ["oneOf", "anyOf"] {
            if let Some(variants) = schema.get(combinator).and_then(Value::as_array) {
                let kinds: Vec<String> = variants
                    .iter()
                    .filter(|v| v.get("type") != Some(&"null".into()))
                    .map(|v| node.at(v).kind())
                    .collect();
                return kinds.join(" or ");
            }
        }
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
            _ => Vec::new(),
        };
        match types.first().copied() {
            Some("array") => {
                let item = schema.get("items").map_or("value".to_owned(), |items| node.at(items).kind());
                format!("list of {item}")
            }
            Some("object") => match schema.get("properties").and_then(Value::as_object) {
                // An enum variant that carries a value: `{ latest = N }`.
                Some(fields) if fields.len() == 1 => {
                    let (key, value) =
                        fields.iter().next().map(|(k, v)| (k.clone(), node.at(v).kind())).unwrap_or_default();
                    format!("`{{ {key} = … }}` ({value})")
                }
                _ => "table".to_owned(),
            },
            Some(other) => other.to_owned(),
            None => "value".to_owned(),
        }
    }
}
