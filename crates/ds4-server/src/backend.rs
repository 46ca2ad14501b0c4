//! Adapters from the real crates to the engine's traits: `ds4_model` (CPU
//! forward pass) as [`ds4_engine::Model`], `ds4_tokenizer` as
//! [`ds4_engine::Tokenizer`], and the embedded demo model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ds4_engine::{EngineError, Model, Session, Tokenizer};
use ds4_model::{Cpu, Numerics, Want};

/// A loaded ds4-model model on the CPU backend.
pub struct Ds4Model {
    model: Arc<ds4_model::Model<Cpu>>,
    numerics: Numerics,
    what: String,
}

impl Ds4Model {
    /// Load and validate a GGUF model file.
    pub fn load(path: &Path) -> Result<Ds4Model, String> {
        let model =
            ds4_model::load(Cpu, path, None).map_err(|e| format!("{}: {e:#}", path.display()))?;
        Ok(Ds4Model {
            model: Arc::new(model),
            numerics: Numerics::Official,
            what: format!("{} (CPU)", path.display()),
        })
    }
}

struct Ds4Session {
    model: Arc<ds4_model::Model<Cpu>>,
    numerics: Numerics,
    s: ds4_model::Session<Cpu>,
}

impl Model for Ds4Model {
    fn vocab_size(&self) -> usize {
        self.model.cfg.vocab
    }

    fn new_session(&self, _ctx: usize) -> Result<Box<dyn Session>, EngineError> {
        // The engine enforces the context limit; the session grows as needed.
        Ok(Box::new(Ds4Session {
            model: self.model.clone(),
            numerics: self.numerics,
            s: self.model.session(self.numerics),
        }))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

impl Session for Ds4Session {
    fn n_tokens(&self) -> usize {
        self.s.pos()
    }

    fn eval(&mut self, tokens: &[u32], want_logits: bool) -> Result<Option<Vec<f32>>, EngineError> {
        let vocab = self.model.cfg.vocab;
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(EngineError::Model(format!(
                "token id {bad} is outside the model vocabulary ({vocab})"
            )));
        }
        let want = if want_logits { Want::Last } else { Want::None };
        let out = self
            .model
            .forward(&mut self.s, tokens, want)
            .map_err(|e| EngineError::Model(format!("{e:#}")))?;
        if !want_logits {
            return Ok(None);
        }
        if out.len() < vocab {
            return Err(EngineError::Model(format!(
                "forward returned {} logits, expected {vocab}",
                out.len()
            )));
        }
        Ok(Some(out[out.len() - vocab..].to_vec()))
    }

    fn reset(&mut self) {
        self.s = self.model.session(self.numerics);
    }

    fn state_bytes(&self) -> usize {
        self.s.state_bytes(&self.model.be)
    }
}

/// The real DeepSeek V4 tokenizer.
pub struct V4Tokenizer(pub Arc<ds4_tokenizer::Tokenizer>);

impl V4Tokenizer {
    pub fn embedded() -> V4Tokenizer {
        V4Tokenizer(Arc::new(ds4_tokenizer::Tokenizer::embedded_v4()))
    }
}

impl Tokenizer for V4Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode(text)
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.0
            .token_bytes(id)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }
    fn eos_id(&self) -> u32 {
        self.0.eos_id()
    }
}

/// The embedded demo model: tiny synthetic weights (`ds4_gguf::synth`
/// `SynthConfig::tiny()` in F16, real tokenizer) written to a temporary GGUF
/// and loaded like any model. Its output is noise.
pub fn demo_model() -> Result<Ds4Model, String> {
    let mut cfg = ds4_gguf::synth::SynthConfig::tiny();
    cfg.recipe = ds4_gguf::layout::Recipe::F16;
    cfg.name = Some("ds4 demo (synthetic weights, output is noise)".into());
    let path = std::env::temp_dir().join(format!("ds4-demo-{}.gguf", std::process::id()));
    let _guard = TempFile(path.clone());
    ds4_gguf::synth::synth_main(&cfg, &path).map_err(|e| format!("writing the demo model: {e}"))?;
    let mut m = Ds4Model::load(&path)?;
    m.what = "embedded demo model (synthetic weights, output is noise)".into();
    // The weights are mapped: on Unix the file can go now; elsewhere the
    // removal fails while mapped and the file stays in the temp dir.
    Ok(m)
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
