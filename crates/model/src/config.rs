//! The model config: a serde struct shaped like Hugging Face's Llama `config.json`.
//!
//! A directory saved by transformers' `LlamaForCausalLM` or `Qwen2ForCausalLM` deserialises into
//! [`LlamaConfig`] as is; the one we write back is read by transformers (it ignores our extras, such
//! as `resid_pdrop`). Fields transformers writes that we do not use are kept in `extra` so a
//! load-save round trip does not lose them.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// HF's `rope_parameters` block (transformers >= 5 writes `rope_theta` inside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_rope_type() -> String {
    "default".to_string()
}

/// A Llama-family decoder config, as in HF's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: heads share key/value projections in groups. Defaults to
    /// `num_attention_heads` (plain multi-head attention), as in transformers.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head size; transformers defaults it to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base. transformers < 5 writes it at top level, >= 5 inside `rope_parameters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on the attention projections: Llama's `attention_bias` (q, k, v and o); Qwen2 has no
    /// such key and always biases q, k, v (not o).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<EosTokenId>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_torch_dtype", alias = "dtype")]
    pub torch_dtype: String,

    // ---- Our extras (transformers ignores them). ----
    /// Residual dropout probability used in training (paper: 0.2 for SFT). Applied to the output of
    /// each attention and MLP block before it is added to the residual stream.
    #[serde(default)]
    pub resid_pdrop: f64,

    /// Anything else transformers wrote, kept for the round trip.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// HF allows `eos_token_id` to be one id or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EosTokenId {
    One(u32),
    Many(Vec<u32>),
}

impl EosTokenId {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            EosTokenId::One(i) => vec![*i],
            EosTokenId::Many(v) => v.clone(),
        }
    }
}

fn default_architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".to_string()]
}
fn default_model_type() -> String {
    "llama".to_string()
}
fn default_max_positions() -> usize {
    2048
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_torch_dtype() -> String {
    "float32".to_string()
}

/// The named sizes of our own models. Parameter counts are for a 2048-token vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// About 50k parameters (with a 512-token vocabulary): for tests.
    Smoke,
    /// About 1M parameters: the pipeline's default.
    Tiny,
    /// About 4.5x `tiny`.
    Small,
}

impl std::str::FromStr for Preset {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "smoke" => Ok(Preset::Smoke),
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            other => Err(ModelError::Config(format!("unknown preset {other:?}: use smoke, tiny or small"))),
        }
    }
}

impl LlamaConfig {
    /// One of our named model sizes, for a tokenizer of `vocab_size` tokens and contexts of up to
    /// `max_position_embeddings` tokens. Embeddings are tied (the vocabulary is a large part of a
    /// tiny model) and attention uses two key/value groups.
    pub fn preset(preset: Preset, vocab_size: usize, max_position_embeddings: usize) -> Self {
        let (hidden, inter, layers, heads, kv) = match preset {
            Preset::Smoke => (32, 64, 2, 4, 2),
            Preset::Tiny => (128, 344, 4, 4, 2),
            Preset::Small => (256, 688, 6, 8, 4),
        };
        LlamaConfig {
            architectures: default_architectures(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            head_dim: None,
            max_position_embeddings,
            rms_norm_eps: 1e-5,
            rope_theta: Some(10000.0),
            rope_parameters: None,
            tie_word_embeddings: true,
            attention_bias: Some(false),
            mlp_bias: false,
            hidden_act: default_hidden_act(),
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            initializer_range: default_initializer_range(),
            torch_dtype: default_torch_dtype(),
            resid_pdrop: 0.0,
            extra: Default::default(),
        }
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope_theta.or_else(|| self.rope_parameters.as_ref().and_then(|p| p.rope_theta)).unwrap_or(10000.0)
    }

    /// Whether q/k/v projections carry a bias (Qwen2 always does; Llama when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// Whether `o_proj` carries a bias: transformers' Llama puts `attention_bias` on all four
    /// projections, Qwen2 on q/k/v only.
    pub fn o_bias(&self) -> bool {
        self.model_type != "qwen2" && self.attention_bias == Some(true)
    }

    /// Checks the cross-field rules; call after deserialising or editing.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 || self.num_kv_heads() == 0 {
            return bad("num_attention_heads and num_key_value_heads must be positive".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_kv_heads()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size ({}) must be divisible by num_attention_heads ({}) or head_dim must be set",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim()));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?} is not supported: only \"silu\" (SwiGLU)", self.hidden_act));
        }
        if self.mlp_bias {
            return bad("mlp_bias = true is not supported".into());
        }
        if self.model_type != "llama" && self.model_type != "qwen2" {
            return bad(format!(
                "model_type {:?} is not supported: only \"llama\" and \"qwen2\" (other architectures differ in \
                 ways this loader would silently ignore)",
                self.model_type
            ));
        }
        if let Some(p) = &self.rope_parameters
            && p.rope_type != "default"
        {
            return bad(format!("rope_type {:?} is not supported: only \"default\"", p.rope_type));
        }
        // transformers < 5 writes RoPE scaling as `rope_scaling` (`rope_type`, or the older `type`);
        // we keep it in `extra` for the round trip, so refuse what the rotary code would ignore.
        if let Some(rs) = self.extra.get("rope_scaling").filter(|v| !v.is_null()) {
            let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(|v| v.as_str());
            if kind != Some("default") {
                return bad(format!(
                    "rope_scaling {rs} is not supported: only unscaled RoPE (rope_scaling null or rope_type \"default\")"
                ));
            }
        }
        if self.extra.get("use_sliding_window").and_then(|v| v.as_bool()) == Some(true) {
            return bad("use_sliding_window = true is not supported: only full causal attention".into());
        }
        if !(0.0..1.0).contains(&self.resid_pdrop) {
            return bad(format!("resid_pdrop ({}) must be in [0, 1)", self.resid_pdrop));
        }
        if self.max_position_embeddings == 0 {
            return bad("max_position_embeddings must be positive".into());
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return bad("rms_norm_eps must be positive".into());
        }
        Ok(())
    }

    /// The number of parameters of the causal LM (tied embeddings counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, hd) = (self.hidden_size, self.head_dim());
        let (nh, nkv) = (self.num_attention_heads, self.num_kv_heads());
        let bias = if self.qkv_bias() { (nh + 2 * nkv) * hd } else { 0 } + if self.o_bias() { d } else { 0 };
        let attn = d * nh * hd * 2 + d * nkv * hd * 2 + bias;
        let mlp = 3 * d * self.intermediate_size;
        let layer = attn + mlp + 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * d };
        embed + self.num_hidden_layers * layer + d + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_have_the_documented_sizes() {
        let smoke = LlamaConfig::preset(Preset::Smoke, 512, 128);
        let tiny = LlamaConfig::preset(Preset::Tiny, 2048, 512);
        let small = LlamaConfig::preset(Preset::Small, 2048, 512);
        for c in [&smoke, &tiny, &small] {
            c.validate().unwrap();
        }
        assert!((30_000..70_000).contains(&smoke.num_parameters()), "{}", smoke.num_parameters());
        assert!((500_000..1_100_000).contains(&tiny.num_parameters()), "{}", tiny.num_parameters());
        let ratio = small.num_parameters() as f64 / tiny.num_parameters() as f64;
        assert!((3.5..6.0).contains(&ratio), "{ratio}");
    }

    #[test]
    fn reads_hf_configs_of_both_generations() {
        let old = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rope_theta": 500000.0, "use_cache": true}"#;
        let c: LlamaConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.rope_theta(), 500000.0);
        assert_eq!(c.num_kv_heads(), 2);
        assert!(c.extra.contains_key("use_cache"));
        let new = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"},
            "model_type": "qwen2", "dtype": "bfloat16", "eos_token_id": [1, 2]}"#;
        let c: LlamaConfig = serde_json::from_str(new).unwrap();
        assert_eq!(c.rope_theta(), 1000.0);
        assert!(c.qkv_bias());
        assert_eq!(c.torch_dtype, "bfloat16");
        assert_eq!(c.eos_token_id.unwrap().ids(), vec![1, 2]);
    }

    #[test]
    fn validate_rejects_bad_head_groups() {
        let mut c = LlamaConfig::preset(Preset::Smoke, 64, 32);
        c.num_key_value_heads = Some(3);
        assert!(c.validate().is_err());
    }

    fn with(extra: &str) -> Result<()> {
        let base = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2"#;
        let c: LlamaConfig = serde_json::from_str(&format!("{base}{extra}}}")).unwrap();
        c.validate()
    }

    #[test]
    fn validate_refuses_what_the_loader_would_silently_ignore() {
        with("").unwrap();
        with(r#", "rope_scaling": null"#).unwrap();
        with(r#", "rope_scaling": {"rope_type": "default"}"#).unwrap();
        with(r#", "model_type": "qwen2", "use_sliding_window": false"#).unwrap();
        let cases = [
            (r#", "rope_scaling": {"rope_type": "llama3", "factor": 32.0}"#, "rope_scaling"),
            (r#", "rope_scaling": {"type": "linear", "factor": 2.0}"#, "rope_scaling"),
            (r#", "model_type": "mistral""#, "model_type \"mistral\""),
            (r#", "model_type": "qwen2", "use_sliding_window": true"#, "use_sliding_window"),
        ];
        for (extra, what) in cases {
            let e = with(extra).unwrap_err().to_string();
            assert!(e.contains(what), "{extra}: {e}");
        }
    }
}
