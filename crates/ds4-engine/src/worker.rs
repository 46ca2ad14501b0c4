//! The worker thread: owns the model and its session slots and runs the
//! queued jobs by continuous batching. Up to one job per slot is active; each
//! step evaluates, in one [`Model::eval_batch`] call, the last sampled token
//! of every decoding job and prefill chunks of the waiting prompts, oldest
//! first, within a token budget per step (`prefill_chunk`, or
//! `batch_prefill_chunk` while some job decodes).
//! New jobs join at step boundaries; finished or cancelled ones leave at once.
//! A job gets the idle slot whose live state it reuses the most, else the
//! least recently used one. With one slot this is the FIFO, one-at-a-time
//! engine with live-prefix reuse.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::{random_seed, Inner, Job};
use crate::sampling::{sample, Rng};
use crate::text::{utf8_safe_len, StopList};
use crate::{
    BatchStep, CacheSource, Control, EngineConfig, EngineError, Event, Finish, GenControl, Model,
    Session, Tokenizer, Usage,
};

/// One session and what it holds.
struct Slot {
    session: Box<dyn Session>,
    /// Tokens evaluated in the session.
    live_tokens: Vec<u32>,
    /// Bytes of `live_tokens`.
    live_text: Vec<u8>,
    /// Logits after the last live token.
    live_logits: Option<Vec<f32>>,
    /// Visible alias text of the live state, valid while the live length
    /// equals the stored position.
    live_alias: Option<(Vec<u8>, usize)>,
    /// Step of the last use (least recently used slot for a cold job).
    used: u64,
}

impl Slot {
    fn invalidate(&mut self) {
        self.session.reset();
        self.live_tokens.clear();
        self.live_text.clear();
        self.live_logits = None;
        self.live_alias = None;
    }

    /// How a job can reuse this slot's live state, decided without encoding
    /// any text: the live tokens prefix its tokens, its text extends the
    /// visible alias, or its text extends the live text.
    fn reuse(&self, req: &crate::GenRequest) -> CacheSource {
        let live = &self.live_tokens;
        if live.is_empty() || self.live_logits.is_none() {
            return CacheSource::None;
        }
        if live.len() <= req.prompt_tokens.len() && req.prompt_tokens[..live.len()] == live[..] {
            return CacheSource::MemoryToken;
        }
        let text = req.prompt_text.as_bytes();
        if let Some((alias, pos)) = &self.live_alias {
            if *pos == live.len()
                && text.len() > alias.len()
                && text.starts_with(alias)
                && std::str::from_utf8(&text[alias.len()..]).is_ok()
            {
                return CacheSource::ThinkingVisible;
            }
        }
        // The rest always starts on a char boundary of the prompt unless the
        // live text ended inside a character.
        if self.live_text.len() <= text.len()
            && text[..self.live_text.len()] == self.live_text[..]
            && std::str::from_utf8(&text[self.live_text.len()..]).is_ok()
        {
            return CacheSource::MemoryText;
        }
        CacheSource::None
    }

    /// Pick the reused prefix; returns (effective prompt, cached count, source).
    fn plan(&self, req: &crate::GenRequest, tok: &dyn Tokenizer) -> (Vec<u32>, usize, CacheSource) {
        let source = self.reuse(req);
        let text = req.prompt_text.as_bytes();
        let rest_from = match (source, &self.live_alias) {
            (CacheSource::None, _) => return (req.prompt_tokens.clone(), 0, source),
            (CacheSource::MemoryToken, _) => {
                return (req.prompt_tokens.clone(), self.live_tokens.len(), source)
            }
            (CacheSource::ThinkingVisible, Some((alias, _))) => alias.len(),
            _ => self.live_text.len(),
        };
        let rest = std::str::from_utf8(&text[rest_from..]).unwrap_or_default();
        let mut eff = self.live_tokens.clone();
        eff.extend(tok.encode(rest));
        (eff, self.live_tokens.len(), source)
    }

    /// Tokens a job would reuse from this slot.
    fn reuse_hint(&self, req: &crate::GenRequest) -> usize {
        match self.reuse(req) {
            CacheSource::None => 0,
            _ => self.live_tokens.len(),
        }
    }
}

/// The think block's delimiters as token bytes (special tokens give their literal text).
const THINK_START: &[u8] = b"<think>";
const THINK_END: &[u8] = b"</think>";

/// A job's state between steps.
struct Active {
    job: Job,
    slot: usize,
    eff: Vec<u32>,
    total: usize,
    cached: usize,
    source: CacheSource,
    /// Prefill position; `total` once generation runs.
    pos: usize,
    /// Prefill progress events are sent (the new part spans several chunks).
    chunked: bool,
    logits: Option<Vec<f32>>,
    decoding: bool,
    usage: Usage,
    rng: Rng,
    stops: StopList,
    max_gen: usize,
    text: Vec<u8>,
    sent: usize,
    control: Option<Box<dyn GenControl>>,
    finish: Finish,
    /// `Some(greedy)` while generation continues.
    greedy: Option<bool>,
    cancel_seen_steps: Option<u64>,
    /// Text length before the token being evaluated this step.
    text_before: usize,
    /// Generated tokens are still reasoning (the prompt opened a think block not yet closed).
    reasoning: bool,
}

/// What a step does with one active job.
enum Part {
    Prefill { end: usize, last: bool },
    Decode { id: u32 },
}

pub(crate) struct Worker {
    inner: Arc<Inner>,
    tokenizer: Arc<dyn Tokenizer>,
    cfg: EngineConfig,
    model: Box<dyn Model>,
    slots: Vec<Slot>,
    active: Vec<Active>,
    step: u64,
    /// Jobs that ended (done, failed, cancelled, refused) in the current round.
    ended: usize,
}

impl Worker {
    pub(crate) fn new(
        inner: Arc<Inner>,
        tokenizer: Arc<dyn Tokenizer>,
        cfg: EngineConfig,
        model: Box<dyn Model>,
        sessions: Vec<Box<dyn Session>>,
    ) -> Worker {
        let slots = sessions
            .into_iter()
            .map(|session| Slot {
                session,
                live_tokens: Vec::new(),
                live_text: Vec::new(),
                live_logits: None,
                live_alias: None,
                used: 0,
            })
            .collect();
        Worker {
            inner,
            tokenizer,
            cfg,
            model,
            slots,
            active: Vec::new(),
            step: 0,
            ended: 0,
        }
    }

    pub(crate) fn run(&mut self) {
        loop {
            let Some(jobs) = self.wait_for_jobs() else {
                return;
            };
            self.inner.stats.busy.store(true, Ordering::SeqCst);
            // A panic in a hook or the model must not kill the worker: the
            // jobs in flight lose their channels (their clients see an
            // aborted generation), every slot is dropped (a panic may leave a
            // session half-updated) and the queue keeps being served.
            let before = self.active.len() + jobs.len();
            self.ended = 0;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for job in jobs {
                    self.admit(job);
                }
                self.run_step();
            }));
            if r.is_err() {
                self.active.clear();
                for s in &mut self.slots {
                    s.invalidate();
                }
                let lost = before.saturating_sub(self.ended) as u64;
                self.inner
                    .stats
                    .jobs_failed
                    .fetch_add(lost, Ordering::SeqCst);
            }
            let stats = &self.inner.stats;
            stats.busy.store(!self.active.is_empty(), Ordering::SeqCst);
            stats.active.store(self.active.len(), Ordering::SeqCst);
            let live: usize = self.slots.iter().map(|s| s.live_tokens.len()).sum();
            stats.live_tokens.store(live, Ordering::SeqCst);
            let bytes: usize = self.slots.iter().map(|s| s.session.state_bytes()).sum();
            stats.state_bytes.store(bytes, Ordering::SeqCst);
        }
    }

    /// Jobs to admit now: as many as there are free slots, waiting for one
    /// when nothing is active. `None`: shut down with nothing left to do.
    fn wait_for_jobs(&mut self) -> Option<Vec<Job>> {
        let free = self.slots.len() - self.active.len();
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut jobs = Vec::new();
            while jobs.len() < free {
                match q.pop_front() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
            self.inner.stats.queued.store(q.len(), Ordering::SeqCst);
            if !jobs.is_empty() || !self.active.is_empty() {
                return Some(jobs);
            }
            if self.inner.shutdown.load(Ordering::SeqCst) {
                return None;
            }
            q = self.inner.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The idle slot for `job`: the one it reuses the most, else the least
    /// recently used.
    fn pick_slot(&self, job: &Job) -> usize {
        let busy: Vec<usize> = self.active.iter().map(|a| a.slot).collect();
        let idle = (0..self.slots.len()).filter(|i| !busy.contains(i));
        let best = idle
            .clone()
            .map(|i| (self.slots[i].reuse_hint(&job.req), i))
            .filter(|&(n, _)| n > 0)
            .max_by_key(|&(n, i)| (n, self.slots[i].used));
        match best {
            Some((_, i)) => i,
            None => idle.min_by_key(|&i| self.slots[i].used).unwrap_or(0),
        }
    }

    /// Start a job on a free slot, or finish it at once.
    fn admit(&mut self, mut job: Job) {
        self.ended += 1; // undone below when the job stays active
        let stats = &self.inner.stats;
        if self.inner.shutdown.load(Ordering::SeqCst) {
            let _ = job.tx.send(Event::Failed(EngineError::ShuttingDown));
            stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if job.gone() {
            stats.record_cancel(0);
            return;
        }
        let si = self.pick_slot(&job);
        self.step += 1;
        let slot = &mut self.slots[si];
        slot.used = self.step;
        let (eff, mut cached, mut source) = slot.plan(&job.req, self.tokenizer.as_ref());
        // Any job replaces the alias (a new one is set at its end if asked).
        slot.live_alias = None;
        let ctx = self.cfg.ctx;
        if eff.len() >= ctx {
            let _ = job.tx.send(Event::Failed(EngineError::ContextOverflow {
                n_prompt: eff.len(),
                n_ctx: ctx,
            }));
            stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if source == CacheSource::None || slot.session.n_tokens() != slot.live_tokens.len() {
            slot.invalidate();
            cached = 0;
            source = CacheSource::None;
        }
        let total = eff.len();
        let chunked = total - cached > self.cfg.prefill_chunk;
        if chunked {
            let _ = job.tx.send(Event::Prefill {
                done: cached,
                total,
            });
        }
        let logits = if cached == total {
            slot.live_logits.take()
        } else {
            None
        };
        let seed = job.req.params.seed.unwrap_or_else(|| random_seed(job.seq));
        let stops = StopList::new(&job.req.stop);
        let max_gen = job.req.max_tokens.min(ctx - total);
        let control = job.req.control.take();
        let reasoning = eff
            .last()
            .is_some_and(|&t| self.tokenizer.token_bytes(t) == THINK_START);
        let mut a = Active {
            job,
            slot: si,
            eff,
            total,
            cached,
            source,
            pos: cached,
            chunked,
            logits,
            decoding: false,
            usage: Usage {
                prompt_tokens: total,
                cached_tokens: cached,
                ..Usage::default()
            },
            reasoning,
            rng: Rng::new(seed),
            stops,
            max_gen,
            text: Vec::new(),
            sent: 0,
            control,
            finish: Finish::Length,
            greedy: None,
            cancel_seen_steps: None,
            text_before: 0,
        };
        if a.pos == a.total && !self.start_generation(&mut a) {
            return;
        }
        self.ended -= 1;
        self.active.push(a);
    }

    /// Prefill done: the live text, `Started`, the controller's first look.
    /// False when the job failed (it is finished).
    fn start_generation(&mut self, a: &mut Active) -> bool {
        let stats = &self.inner.stats;
        let slot = &mut self.slots[a.slot];
        // Live text: the decoded effective prompt. It equals the prompt text
        // except after a visible-alias continuation (the KV keeps hidden text).
        if a.source == CacheSource::ThinkingVisible {
            for &t in &a.eff[a.cached..] {
                slot.live_text
                    .extend_from_slice(&self.tokenizer.token_bytes(t));
            }
        } else {
            slot.live_text = a.job.req.prompt_text.as_bytes().to_vec();
        }
        if a.logits.is_none() {
            slot.invalidate();
            let _ = a.job.tx.send(Event::Failed(EngineError::Model(
                "model returned no logits after prefill".into(),
            )));
            stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        let _ = a.job.tx.send(Event::Started {
            prompt_tokens: a.total,
            cached_tokens: a.cached,
            source: a.source,
        });
        a.decoding = true;
        a.greedy = self.observe(a);
        true
    }

    /// The controller's decision after the text so far.
    fn observe(&self, a: &mut Active) -> Option<bool> {
        match a.control.as_mut().map(|c| c.observe(&a.text)) {
            Some(Control::Stop(f)) => {
                a.finish = f;
                None
            }
            Some(Control::Continue { greedy }) => Some(greedy),
            None => Some(false),
        }
    }

    /// Sample the next token of a decoding job: `Some(id)` to evaluate, or
    /// `None` when the job ends here (its finish is set).
    fn sample_next(&self, a: &mut Active) -> Option<u32> {
        let g = a.greedy?;
        if a.usage.completion_tokens >= a.max_gen {
            a.finish = Finish::Length;
            return None;
        }
        if a.job.gone() {
            a.finish = Finish::Cancelled;
            a.cancel_seen_steps = Some(0);
            return None;
        }
        if self.inner.shutdown.load(Ordering::SeqCst) {
            a.finish = Finish::Error("shutdown requested".into());
            return None;
        }
        let mut p = a.job.req.params;
        if g {
            p.temperature = 0.0;
        }
        let logits = a.logits.as_ref()?;
        let id = sample(logits, &p, &mut a.rng);
        if id == self.tokenizer.eos_id() {
            a.finish = Finish::Eos;
            return None;
        }
        let before = a.text.len();
        let bytes = self.tokenizer.token_bytes(id);
        if a.reasoning {
            a.usage.reasoning_tokens += 1;
            a.reasoning = bytes != THINK_END;
        }
        a.text.extend_from_slice(&bytes);
        a.usage.completion_tokens += 1;
        if !a.stops.is_empty() {
            if let Some((at, seq)) = a.stops.find(&a.text, before) {
                a.finish = Finish::StopSequence(seq.to_string());
                a.text.truncate(at);
                return None;
            }
        }
        a.text_before = before;
        Some(id)
    }

    /// One step over every active job.
    fn run_step(&mut self) {
        // what each job does this step; jobs that end now are finished first
        let mut active = std::mem::take(&mut self.active);
        let mut parts: Vec<(Active, Part)> = Vec::with_capacity(active.len());
        let decoding_jobs = active.iter().filter(|a| a.decoding).count();
        // prefill tokens this step, shared by the waiting prompts in arrival
        // order: a smaller budget while others decode keeps their steps short
        let (chunk, mut budget) = if decoding_jobs > 0 {
            (self.cfg.batch_prefill_chunk, self.cfg.batch_prefill_chunk)
        } else {
            (self.cfg.prefill_chunk, self.cfg.prefill_chunk)
        };
        for mut a in active.drain(..) {
            if a.decoding {
                match self.sample_next(&mut a) {
                    Some(id) => parts.push((a, Part::Decode { id })),
                    None => self.finish(a),
                }
                continue;
            }
            if a.job.gone() {
                // The session holds eff[..pos]: a valid (shorter) live state
                // whose last logits are unknown, so it cannot be resumed.
                self.slots[a.slot].invalidate();
                self.inner.stats.record_cancel(0);
                self.ended += 1;
                continue;
            }
            if self.inner.shutdown.load(Ordering::SeqCst) {
                let _ = a.job.tx.send(Event::Failed(EngineError::ShuttingDown));
                self.slots[a.slot].invalidate();
                self.inner.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                self.ended += 1;
                continue;
            }
            if budget == 0 {
                self.active.push(a);
                continue;
            }
            // chunks stay aligned to absolute multiples of the chunk size
            let end = ((a.pos / chunk + 1) * chunk)
                .min(a.total)
                .min(a.pos + budget);
            budget -= end - a.pos;
            let last = end == a.total;
            parts.push((a, Part::Prefill { end, last }));
        }
        if parts.is_empty() {
            return;
        }
        // one batched evaluation, the slots in the parts' order
        let results = {
            let mut by_slot: Vec<Option<&mut Slot>> = self.slots.iter_mut().map(Some).collect();
            let mut steps: Vec<BatchStep<'_>> = Vec::with_capacity(parts.len());
            let mut ids: Vec<[u32; 1]> = parts
                .iter()
                .map(|(_, p)| match p {
                    Part::Decode { id } => [*id],
                    Part::Prefill { .. } => [0],
                })
                .collect();
            for ((a, p), id) in parts.iter().zip(ids.iter_mut()) {
                let Some(slot) = by_slot[a.slot].take() else {
                    continue;
                };
                let (tokens, want_logits): (&[u32], bool) = match p {
                    Part::Decode { .. } => (&id[..], true),
                    Part::Prefill { end, last } => (&a.eff[a.pos..*end], *last),
                };
                steps.push(BatchStep {
                    session: slot.session.as_mut(),
                    tokens,
                    want_logits,
                });
            }
            self.model.eval_batch(&mut steps)
        };
        let mut results = results.into_iter();
        for (mut a, p) in parts {
            let r = results.next().unwrap_or_else(|| {
                Err(EngineError::Model("batched evaluation lost a step".into()))
            });
            match p {
                Part::Prefill { end, last } => self.after_prefill(a, r, end, last),
                Part::Decode { id } => {
                    let was_gone = a.job.gone();
                    match r {
                        Ok(Some(l)) => {
                            a.logits = Some(l);
                            let slot = &mut self.slots[a.slot];
                            slot.live_tokens.push(id);
                            slot.live_text.extend_from_slice(&a.text[a.text_before..]);
                            self.inner.stats.decode_steps.fetch_add(1, Ordering::SeqCst);
                            if was_gone {
                                a.cancel_seen_steps = Some(a.cancel_seen_steps.unwrap_or(0) + 1);
                            }
                            a.greedy = self.observe(&mut a);
                            self.stream(&mut a);
                            self.active.push(a);
                        }
                        Ok(None) => {
                            a.finish = Finish::Error("model returned no logits".into());
                            self.slots[a.slot].invalidate();
                            self.finish(a);
                        }
                        Err(e) => {
                            a.finish = Finish::Error(e.to_string());
                            self.slots[a.slot].invalidate();
                            self.finish(a);
                        }
                    }
                }
            }
        }
        // keep arrival order (prefill goes to the oldest waiting job)
        self.active.sort_by_key(|a| a.job.seq);
    }

    fn after_prefill(
        &mut self,
        mut a: Active,
        r: Result<Option<Vec<f32>>, EngineError>,
        end: usize,
        last: bool,
    ) {
        match r {
            Ok(l) => {
                let slot = &mut self.slots[a.slot];
                slot.live_tokens.extend_from_slice(&a.eff[a.pos..end]);
                if last {
                    a.logits = l;
                }
            }
            Err(e) => {
                self.slots[a.slot].invalidate();
                let _ = a.job.tx.send(Event::Failed(e));
                self.inner.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
                self.ended += 1;
                return;
            }
        }
        a.pos = end;
        if a.chunked {
            let _ = a.job.tx.send(Event::Prefill {
                done: a.pos,
                total: a.total,
            });
        }
        if a.pos == a.total && !self.start_generation(&mut a) {
            self.ended += 1;
            return;
        }
        self.active.push(a);
    }

    /// Stream what is safe: hold a possible partial stop sequence and partial UTF-8.
    fn stream(&self, a: &mut Active) {
        let limit = a.text.len().saturating_sub(a.stops.hold());
        let limit = utf8_safe_len(&a.text[..limit.max(a.sent)]).max(a.sent);
        if limit > a.sent {
            let s = String::from_utf8_lossy(&a.text[a.sent..limit]).into_owned();
            a.sent = limit;
            let _ = a.job.tx.send(Event::Text(s));
        }
    }

    /// The end of a job: the slot's live state, the rest of the text, `Done`.
    fn finish(&mut self, mut a: Active) {
        self.ended += 1;
        let stats = &self.inner.stats;
        let slot = &mut self.slots[a.slot];
        if matches!(a.finish, Finish::StopSequence(_)) {
            // The live KV holds tokens past the cut point: invalidate it.
            slot.invalidate();
        } else {
            slot.live_logits = a.logits.take();
            if let Some(f) = a.job.req.visible.take() {
                if let Some(alias) = f(&a.text, &a.finish) {
                    slot.live_alias = Some((alias.into_bytes(), slot.live_tokens.len()));
                }
            }
        }
        if a.text.len() > a.sent {
            let _ = a.job.tx.send(Event::Text(
                String::from_utf8_lossy(&a.text[a.sent..]).into_owned(),
            ));
        }
        if a.finish == Finish::Cancelled {
            stats.record_cancel(a.cancel_seen_steps.unwrap_or(0));
        } else {
            stats.jobs_done.fetch_add(1, Ordering::SeqCst);
        }
        let _ = a.job.tx.send(Event::Done {
            finish: a.finish,
            usage: a.usage,
        });
    }
}
