//! Text side of the processor: the `tokenizers` tokenizer of the model folder, its chat
//! template rendered with minijinja (Python string methods enabled, as HF templates use
//! them), and the expansion of each `<|image_pad|>` to one token per merged patch.

use std::path::Path;

use serde_json::Value;

use super::config::read_json;
use super::error::{Result, VlmError};

/// A Jinja chat template as HF ships it.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        message,
    ))
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        // HF renders with trim_blocks and lstrip_blocks on.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| VlmError::Template(format!("{e:#}")))?;
        env.set_syntax(syntax);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| VlmError::Template(format!("{e:#}")))?;
        Ok(Self { env })
    }

    /// The template of a model folder: `chat_template.jinja`, `chat_template.json`
    /// (`{"chat_template": …}`) or `tokenizer_config.json`'s `chat_template`, first found.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let s = std::fs::read_to_string(&jinja).map_err(|e| VlmError::io(&jinja, e))?;
            return Self::new(&s).map(Some);
        }
        for name in ["chat_template.json", "tokenizer_config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            match read_json(&path)?.get("chat_template") {
                Some(Value::String(s)) => return Self::new(s).map(Some),
                Some(Value::Array(named)) => {
                    // [{"name": "default", "template": …}, …]
                    let pick = named
                        .iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                        .or_else(|| named.first())
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str);
                    if let Some(s) = pick {
                        return Self::new(s).map(Some);
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Renders `messages` (HF chat format: `[{"role": …, "content": str | [items]}]`).
    /// `extra` holds further template variables (e.g. `add_vision_id`).
    pub fn render(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
        extra: &Value,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| VlmError::Template(format!("{e:#}")))?;
        let mut ctx = serde_json::Map::new();
        if let Some(map) = extra.as_object() {
            ctx.extend(map.clone());
        }
        ctx.insert("messages".into(), messages.clone());
        ctx.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        tmpl.render(minijinja::value::Serde(&ctx))
            .map_err(|e| VlmError::Template(format!("{e:#}")))
    }
}

/// The model folder's tokenizer with the ids of Qwen's special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Reads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| VlmError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner })
    }

    /// Token ids of `text` (special tokens written in the text are recognised; no BOS is
    /// added, as Qwen's tokenizer adds none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| VlmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| VlmError::Tokenizer(e.to_string()))
    }

    /// Every token whose text could be part of an answer line `pick N place M` or of a
    /// reasoning line (`goal 1 near 3`, then a newline; `planner::grammar::Lookup`): made
    /// only of those letters, spaces, newlines and digits (` 7`, `12`, ` place`, ` `, `ick`,
    /// ` far`), with that text. Constrained sampling chooses among those that keep the answer valid. One pass
    /// over the vocabulary.
    pub fn answer_tokens(&self) -> Vec<(u32, String)> {
        (0..self.inner.get_vocab_size(true) as u32)
            .filter_map(|id| {
                let piece = self.inner.decode(&[id], false).ok()?;
                (!piece.is_empty()
                    && piece
                        .chars()
                        .all(|c| c == ' ' || c.is_ascii_digit() || "pickla e\nurntgof".contains(c)))
                .then_some((id, piece))
            })
            .collect()
    }

    /// Id of a token, e.g. `<|im_end|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Replaces the `i`-th `<|image_pad|>` in `text` by `counts[i]` copies, as the processor
/// does before tokenising (`counts` = `t·h·w / merge²` of each image).
pub fn expand_image_pads(text: &str, counts: &[usize]) -> Result<String> {
    const PAD: &str = "<|image_pad|>";
    let parts: Vec<&str> = text.split(PAD).collect();
    if parts.len() - 1 != counts.len() {
        return Err(VlmError::Input(format!(
            "the prompt has {} image placeholders but {} images were given",
            parts.len() - 1,
            counts.len()
        )));
    }
    let mut out = String::with_capacity(text.len() + counts.iter().sum::<usize>() * PAD.len());
    for (i, part) in parts.iter().enumerate() {
        out.push_str(part);
        if let Some(&n) = counts.get(i) {
            for _ in 0..n {
                out.push_str(PAD);
            }
        }
    }
    Ok(out)
}
