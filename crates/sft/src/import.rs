//! `sft.import`: a user's base model (a Hugging Face directory with
//! `config.json`, `*.safetensors` and `tokenizer.json`) as a model artifact,
//! so SFT, the reward model and PPO can start from it instead of from
//! `sft.pretrain`. The directory's content enters the key.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lineage::{InputSpec, StageContext, TableSpec, TypedStage, Validate};
use model::lm::CausalLm;
use model::tokenizer::{InstructionFormat, Tokenizer};
use model::train;
use serde::{Deserialize, Serialize};

pub struct Import;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportParams {
    /// The model directory.
    pub path: String,
    /// The instruction format; empty fields keep the directory's own
    /// `instruction_format.json`, or else ours, with the model's EOS token.
    pub user_prefix: String,
    pub assistant_prefix: String,
    pub eos_token: String,
}

impl Validate for ImportParams {
    fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() {
            return Err(
                "`path` is required: a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)"
                    .into(),
            );
        }
        Ok(())
    }
}

impl TypedStage for Import {
    type Params = ImportParams;
    const NAME: &'static str = "sft.import";
    const ABOUT: &'static str = "A user's base model (a Hugging Face Llama/Qwen2-style directory) as a model artifact.";
    const INPUTS: &'static [InputSpec] = &[];
    const OUTPUTS: &'static [TableSpec] = &[];
    const USES_DEVICE: bool = true;
    const HEADLINE: Option<&'static str> = Some("parameters");
    fn code() -> lineage::CodeIdentity {
        lineage::code_identity!()
    }
    fn file_deps(p: &ImportParams) -> Vec<PathBuf> {
        vec![PathBuf::from(&p.path)]
    }

    fn run(ctx: &mut StageContext, p: &ImportParams) -> Result<()> {
        let dir = PathBuf::from(&p.path);
        let device = train::parse_device(&ctx.device)?;
        let lm = CausalLm::load(&dir, &device)
            .with_context(|| format!("{}: not a loadable model directory", dir.display()))?;
        let tok = Tokenizer::from_dir(&dir)?;
        let mut format = match InstructionFormat::load_from_dir(&dir)? {
            Some(f) => f,
            None => {
                let mut f = InstructionFormat::default();
                if let Some(eos) = lm.config().eos_token_id.as_ref().and_then(|e| e.ids().first().copied())
                    && let Some(token) = tok.inner().id_to_token(eos)
                {
                    f.eos_token = token;
                }
                f
            }
        };
        for (given, field) in [
            (&p.user_prefix, &mut format.user_prefix),
            (&p.assistant_prefix, &mut format.assistant_prefix),
            (&p.eos_token, &mut format.eos_token),
        ] {
            if !given.is_empty() {
                *field = given.clone();
            }
        }
        if tok.token_id(&format.eos_token).is_none() {
            bail!(
                "{}: the tokenizer has no token `{}` to end responses with; set eos_token to one it has",
                dir.display(),
                format.eos_token
            );
        }
        let model_vocab = lm.config().vocab_size;
        if let Some(eos) = tok.token_id(&format.eos_token).filter(|&id| id as usize >= model_vocab) {
            bail!(
                "{}: the end-of-response token `{}` has id {eos}, outside the model's vocabulary of {model_vocab} \
                 (config.json vocab_size): the tokenizer.json does not belong to these weights",
                dir.display(),
                format.eos_token
            );
        }
        if tok.vocab_size() > model_vocab {
            ctx.warn(format!(
                "{}: tokenizer.json has {} tokens but config.json's vocab_size is {model_vocab}: text that \
                 encodes to the extra ids will fail in the embedding",
                dir.display(),
                tok.vocab_size()
            ));
        }
        ctx.metric("parameters", lm.config().num_parameters() as f64);
        let out = ctx.out_path("model/config.json")?.parent().expect("model dir").to_path_buf();
        lm.save(&out)?;
        tok.save_to_dir(&out)?;
        format.save_to_dir(&out)?;
        Ok(())
    }
}
