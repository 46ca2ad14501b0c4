//! The DeepSeek V4 forward pass of `ds4-model` behind the engine's [`Model`] /
//! [`Session`] traits, the real tokenizer behind [`Tokenizer`], and the
//! embedded demo model (tiny random weights + the real tokenizer) that the
//! server and the CLI use when no GGUF is given.

use std::path::Path;
use std::sync::Arc;

use ds4_gguf::layout::Recipe;
use ds4_gguf::synth::{synth_main_to, SynthConfig};
use ds4_gguf::GgufFile;
use ds4_model::{Backend, Cpu, Cuda, GgufSource, Numerics, SeqStep, Want};

use crate::{BatchStep, EngineError, Model, Session, Tokenizer};

/// Which backend runs the forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// CUDA where a GPU and its driver are present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl BackendChoice {
    /// The concrete backend: `Auto` asks the driver for a GPU.
    pub fn resolve(self) -> BackendChoice {
        match self {
            BackendChoice::Auto if ds4_model::cuda::device_count() > 0 => BackendChoice::Cuda,
            BackendChoice::Auto => BackendChoice::Cpu,
            b => b,
        }
    }
}

/// Number of CUDA GPUs the driver sees (0 without a driver).
pub fn cuda_devices() -> usize {
    ds4_model::cuda::device_count()
}

/// The error of `--cuda` where no GPU can be used.
pub fn require_cuda() -> Result<(), EngineError> {
    if !ds4_model::cuda::driver_available() {
        return Err(EngineError::Model(
            "--cuda: no CUDA driver (libcuda.so) on this machine".to_string(),
        ));
    }
    if cuda_devices() == 0 {
        return Err(EngineError::Model(
            "--cuda: the CUDA driver sees no GPU".to_string(),
        ));
    }
    Ok(())
}

/// How to load a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Numerics of every session (default: official, what the real weights expect).
    pub numerics: Numerics,
    /// Optional MTP support file.
    pub mtp: Option<std::path::PathBuf>,
    pub backend: BackendChoice,
}

/// A forward-pass model on one of the backends.
#[derive(Clone)]
pub enum AnyModel {
    Cpu(Arc<ds4_model::Model<Cpu>>),
    Cuda(Arc<ds4_model::Model<Cuda>>),
}

impl AnyModel {
    pub fn cfg(&self) -> &ds4_model::Config {
        match self {
            AnyModel::Cpu(m) => &m.cfg,
            AnyModel::Cuda(m) => &m.cfg,
        }
    }
    pub fn has_mtp(&self) -> bool {
        match self {
            AnyModel::Cpu(m) => m.has_mtp(),
            AnyModel::Cuda(m) => m.has_mtp(),
        }
    }
    pub fn backend_name(&self) -> String {
        match self {
            AnyModel::Cpu(m) => m.be.name(),
            AnyModel::Cuda(m) => m.be.name(),
        }
    }
}

/// A loaded DeepSeek V4 Flash model. Cloning is cheap: the clones share the
/// weights.
#[derive(Clone)]
pub struct Ds4Model {
    model: AnyModel,
    numerics: Numerics,
    name: String,
}

impl Ds4Model {
    /// The underlying forward-pass model.
    pub fn inner(&self) -> &AnyModel {
        &self.model
    }
}

struct Ds4Session<B: Backend> {
    model: Arc<ds4_model::Model<B>>,
    session: ds4_model::Session<B>,
}

fn model_err(e: anyhow::Error) -> EngineError {
    EngineError::Model(format!("{e:#}"))
}

impl<B: Backend + 'static> Session for Ds4Session<B> {
    fn n_tokens(&self) -> usize {
        self.session.pos()
    }

    fn eval(&mut self, tokens: &[u32], want_logits: bool) -> Result<Option<Vec<f32>>, EngineError> {
        let want = if want_logits { Want::Last } else { Want::None };
        let out = self
            .model
            .forward(&mut self.session, tokens, want)
            .map_err(model_err)?;
        Ok(if want_logits { Some(out) } else { None })
    }

    fn reset(&mut self) {
        // the preallocated state is kept; only its counters restart
        self.session.clear();
    }

    fn state_bytes(&self) -> usize {
        self.session.state_bytes(&self.model.be)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

/// Several ds4 sessions of one model in one `forward_batch` call (each at
/// its own position); sessions of another kind make it one call each.
fn eval_batch_on<B: Backend + 'static>(
    model: &ds4_model::Model<B>,
    steps: &mut [BatchStep<'_>],
) -> Vec<Result<Option<Vec<f32>>, EngineError>> {
    let wants: Vec<bool> = steps.iter().map(|st| st.want_logits).collect();
    let seqs: Option<Vec<SeqStep<'_, B>>> = steps
        .iter_mut()
        .map(|st| {
            let tokens = st.tokens;
            let want = if st.want_logits {
                Want::Last
            } else {
                Want::None
            };
            let s = st.session.as_any_mut()?.downcast_mut::<Ds4Session<B>>()?;
            Some(SeqStep {
                session: &mut s.session,
                ids: tokens,
                want,
            })
        })
        .collect();
    let Some(mut seqs) = seqs.filter(|v| v.len() >= 2) else {
        return steps
            .iter_mut()
            .map(|st| st.session.eval(st.tokens, st.want_logits))
            .collect();
    };
    match model.forward_batch(&mut seqs) {
        Ok(out) if out.len() == wants.len() => out
            .into_iter()
            .zip(wants)
            .map(|(l, w)| Ok(w.then_some(l)))
            .collect(),
        Ok(out) => {
            let e = format!(
                "batched forward gave {} results for {} sequences",
                out.len(),
                wants.len()
            );
            wants
                .iter()
                .map(|_| Err(EngineError::Model(e.clone())))
                .collect()
        }
        Err(e) => {
            let e = model_err(e);
            wants.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

impl Model for Ds4Model {
    fn vocab_size(&self) -> usize {
        self.model.cfg().vocab
    }

    fn new_session(&self, ctx: usize) -> Result<Box<dyn Session>, EngineError> {
        let ctx = ctx.max(1);
        Ok(match &self.model {
            AnyModel::Cpu(m) => Box::new(Ds4Session {
                model: m.clone(),
                session: m.session_ctx(self.numerics, ctx).map_err(model_err)?,
            }),
            AnyModel::Cuda(m) => Box::new(Ds4Session {
                model: m.clone(),
                session: m.session_ctx(self.numerics, ctx).map_err(model_err)?,
            }),
        })
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn eval_batch(
        &self,
        steps: &mut [BatchStep<'_>],
    ) -> Vec<Result<Option<Vec<f32>>, EngineError>> {
        match &self.model {
            AnyModel::Cpu(m) => eval_batch_on(m, steps),
            AnyModel::Cuda(m) => eval_batch_on(m, steps),
        }
    }
}

/// Load a main GGUF (validated; on the CPU the weights stay in the
/// read-only mmap, on CUDA they are uploaded to the GPU).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Ds4Model, EngineError> {
    let model = match opts.backend.resolve() {
        BackendChoice::Cuda => {
            let be = Cuda::open(0)
                .map_err(|e| EngineError::Model(format!("--cuda: no usable CUDA GPU: {e:#}")))?;
            AnyModel::Cuda(Arc::new(
                ds4_model::load(be, path, opts.mtp.as_deref()).map_err(model_err)?,
            ))
        }
        _ => AnyModel::Cpu(Arc::new(
            ds4_model::load(Cpu, path, opts.mtp.as_deref()).map_err(model_err)?,
        )),
    };
    let name = format!("{} ({})", path.display(), model.backend_name());
    Ok(Ds4Model {
        model,
        numerics: opts.numerics,
        name,
    })
}

/// The synth config of the embedded demo model: the tiny layout (every code
/// path: ratio 0 / 4 / 128 layers, hash layers, indexer) with narrow F16
/// weights and the real 129280-token vocabulary.
pub fn demo_config() -> SynthConfig {
    let mut cfg = SynthConfig::tiny();
    cfg.recipe = Recipe::F16;
    cfg.seed = 0x0d54_d3e0;
    cfg.name = Some("ds4-rs embedded demo model (random weights)".to_string());
    cfg
}

/// Build the embedded demo model in memory: random weights (its output is
/// noise) with the real tokenizer.
pub fn demo() -> Result<Ds4Model, EngineError> {
    let cfg = demo_config();
    let (bytes, _) = synth_main_to(&cfg, Vec::new())
        .map_err(|e| EngineError::Model(format!("building the demo model: {e}")))?;
    let file = GgufFile::from_bytes(bytes)
        .map_err(|e| EngineError::Model(format!("reading the demo model: {e}")))?;
    let mc = ds4_gguf::layout::ModelConfig::from_gguf(&file)
        .map_err(|e| EngineError::Model(format!("demo model config: {e}")))?;
    let cfg = ds4_model::gguf::config_from_layout(&mc).map_err(model_err)?;
    let src = GgufSource::new(file);
    let model = ds4_model::Model::bind(Cpu, cfg, &src, None).map_err(model_err)?;
    Ok(Ds4Model {
        model: AnyModel::Cpu(Arc::new(model)),
        numerics: Numerics::Exact,
        name: "embedded demo model (tiny random weights, real tokenizer: output is noise)"
            .to_string(),
    })
}

/// The real DeepSeek V4 tokenizer behind the engine's [`Tokenizer`] trait.
pub struct Ds4Tokenizer(pub &'static ds4_tokenizer::Tokenizer);

impl Ds4Tokenizer {
    /// The embedded V4 tokenizer (process-wide, built once).
    pub fn embedded() -> Ds4Tokenizer {
        Ds4Tokenizer(ds4_tokenizer::Tokenizer::shared_v4())
    }
}

impl Tokenizer for Ds4Tokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.0.encode(text)
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.0
            .token_bytes(id)
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    fn eos_id(&self) -> u32 {
        self.0.eos_id()
    }
}
